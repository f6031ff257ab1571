"""The page of the credit microscope (``replay.group_view``): prefix trees coloured by credit.

``render_group_html(data)`` draws ``group_view.group_page_data``'s ``data`` as one self-contained
page (inline CSS and JS, no network): the shown groups listed on the left, one group's prefix tree
at a time (nested lists; a node shows its turn, action, member count, ground-truth labels, the
recurring-anchor mark and, where members end, their outcome), a selector of the estimator that
colours the nodes (a node's colour is its members' mean advantage; green positive, red negative,
the intensity relative to that estimator's largest magnitude on the page) and a details panel
that a click fills with the action, the observation, each estimator's advantage per member and
the labels. The markup is drawn on the server side, coloured by the first estimator, with every
text escaped and a hover title per node, so the trees read the same with scripts off; the script
re-colours, switches groups and fills the panel from the embedded JSON
(``<script type="application/json" id="group-data">`` with ``<``, ``>`` and ``&`` escaped), only
through ``textContent``. Lone surrogates show as U+FFFD.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from creditgym.files import replace_surrogates
from creditgym.replay.html import _colour, _e

_CSS = """
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: #1d1d1f; background: #fafafa; }
header { padding: 8px 14px; background: #24292f; color: #fff; display: flex; gap: 12px;
  align-items: center; flex-wrap: wrap; }
header h1 { font-size: 16px; margin: 0 12px 0 0; } header select { font: inherit; }
#layout { display: flex; height: calc(100vh - 46px); }
nav { width: 260px; overflow-y: auto; border-right: 1px solid #ddd; background: #fff; }
nav button { display: block; width: 100%; text-align: left; border: 0; background: none;
  border-bottom: 1px solid #eee; padding: 6px 10px; cursor: pointer; font: inherit; }
nav button:hover { background: #f0f4ff; } nav button.active { background: #dbe7ff; }
.meta { color: #666; font-size: 12px; }
main { flex: 1; overflow: auto; padding: 10px 16px; }
aside { width: 420px; overflow-y: auto; border-left: 1px solid #ddd; background: #fff;
  padding: 10px 12px; }
.note { color: #555; font-size: 12.5px; margin: 4px 0; }
ul.tree, ul.tree ul { list-style: none; margin: 0; padding-left: 22px; }
ul.tree { padding-left: 0; } ul.tree li { position: relative; margin: 3px 0; }
ul.tree ul li::before { content: ""; position: absolute; left: -14px; top: 0; height: 14px;
  width: 12px; border-left: 1px solid #bbb; border-bottom: 1px solid #bbb; }
.node { display: inline-block; max-width: 760px; border: 1px solid #ccc; border-radius: 5px;
  padding: 2px 7px; cursor: pointer; font: 12.5px/1.4 ui-monospace, monospace;
  white-space: pre-wrap; word-break: break-word; }
.node.selected { outline: 2px solid #1a73e8; }
.turn { color: #555; } .count { color: #333; font-weight: 600; }
.lab { font: 11px system-ui, sans-serif; padding: 0 4px; border-radius: 3px; margin-left: 4px; }
.lab.useful { background: #d7f5dd; } .lab.wasted { background: #e8e8e8; }
.lab.harmful { background: #fbd3d0; }
.anchor { font: 11px system-ui, sans-serif; background: #fff3c4; border: 1px solid #e0b400;
  border-radius: 3px; padding: 0 4px; margin-left: 4px; }
.end { font: 11px system-ui, sans-serif; margin-left: 4px; }
.ok { color: #137333; font-weight: 600; } .bad { color: #c5221f; font-weight: 600; }
pre { white-space: pre-wrap; word-break: break-word; margin: 4px 0; padding: 6px 8px;
  background: #f6f8fa; border-radius: 4px; font: 12px/1.4 ui-monospace, monospace; }
table.adv { border-collapse: collapse; font-size: 12px; } table.adv td, table.adv th {
  padding: 1px 6px; border-bottom: 1px solid #eee; text-align: right; }
table.adv th.cur, table.adv td.cur { background: #eef3ff; }
.legend span { padding: 0 6px; border-radius: 2px; }
"""

_JS = """
const data = JSON.parse(document.getElementById('group-data').textContent);
const pick = document.getElementById('estimator');
const buttons = Array.from(document.querySelectorAll('nav button'));
const sections = Array.from(document.querySelectorAll('section.group'));
const details = document.getElementById('details');
const fmt = v => v === null || v === undefined ? '-' : (v > 0 ? '+' : '') + v.toFixed(4);
function scaleOf(name) {
  let s = 0;
  for (const per of data.advantages[name] || [])
    for (const v of per) if (v !== null) s = Math.max(s, Math.abs(v));
  return s;
}
function colour(v, s) {
  if (v === null || !(s > 0)) return '';
  const a = Math.min(Math.abs(v) / s, 1) * 0.8;
  return 'rgba(' + (v > 0 ? '0,170,60' : '220,30,30') + ',' + a.toFixed(3) + ')';
}
function nodeMean(name, node) {
  let sum = 0, n = 0;
  for (const [ti, k] of node.members) {
    const v = data.advantages[name][ti][k];
    if (v !== null) { sum += v; n++; }
  }
  return n ? sum / n : null;
}
function recolour() {
  const name = pick.value;
  if (!name) return;
  const s = scaleOf(name);
  document.querySelectorAll('.node').forEach(el => {
    el.style.background = colour(nodeMean(name, data.groups[el.dataset.g].nodes[el.dataset.n]), s);
  });
  document.getElementById('lo').textContent = '-' + s.toPrecision(3);
  document.getElementById('hi').textContent = '+' + s.toPrecision(3);
  document.getElementById('lo').style.background = colour(-s, s);
  document.getElementById('hi').style.background = colour(s, s);
}
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function show(g, n) {
  document.querySelectorAll('.node.selected').forEach(e => e.classList.remove('selected'));
  const box = document.querySelector('.node[data-g="' + g + '"][data-n="' + n + '"]');
  if (box) box.classList.add('selected');
  const grp = data.groups[g], node = grp.nodes[n];
  details.replaceChildren();
  details.append(el('h3', 'group ' + grp.id + ' · turn ' + node.turn + ' · ' +
                    node.members.length + ' member(s)'));
  if (node.anchor !== null)
    details.append(el('p', 'anchor state ' + node.anchor + ': reached through more than one ' +
      'history; ' + node.anchor_rows + ' turn(s) of the group start from it (GiGPO step group)',
      'note'));
  details.append(el('b', 'action'), el('pre', node.action), el('b', 'observation'),
                 el('pre', node.observation || '(none recorded)'));
  const table = el('table', undefined, 'adv'), head = el('tr');
  head.append(el('th', 'trajectory'), el('th', 'label'));
  for (const name of data.estimators) head.append(el('th', name, name === pick.value ? 'cur' : ''));
  table.append(head);
  for (const [ti, k] of node.members) {
    const t = data.trajectories[ti], row = el('tr');
    const end = k === t.turns - 1 ? ' (end, return ' + t.return + ')' : '';
    row.append(el('td', t.id + end), el('td', t.labels ? t.labels[k] : '-'));
    for (const name of data.estimators)
      row.append(el('td', fmt(data.advantages[name][ti][k]), name === pick.value ? 'cur' : ''));
    table.append(row);
  }
  details.append(el('b', 'advantage per estimator'), table);
  for (const [name, why] of Object.entries(data.skipped))
    details.append(el('p', name + ' not shown: ' + why, 'note'));
}
function select(g) {
  sections.forEach(s => s.hidden = s.dataset.g !== String(g));
  buttons.forEach(b => b.classList.toggle('active', b.dataset.g === String(g)));
}
buttons.forEach(b => b.addEventListener('click', () => select(b.dataset.g)));
document.querySelectorAll('.node').forEach(e => e.addEventListener('click', ev => {
  ev.stopPropagation(); show(e.dataset.g, e.dataset.n);
}));
pick.addEventListener('input', () => {
  recolour();
  const s = document.querySelector('.node.selected');
  if (s) show(s.dataset.g, s.dataset.n);
});
if (buttons.length) select(buttons[0].dataset.g);
recolour();
"""


_OUTCOME = {True: ("ok", "✓"), False: ("bad", "✗"), None: ("", "·")}
"""CSS class and mark of an episode's outcome (success, failure, unknown)."""


def _mean(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None


def _node_html(data: dict[str, Any], g: int, node: dict[str, Any], children: dict[Any, list],
               default: str | None, scale: float) -> str:
    trajs, adv = data["trajectories"], data["advantages"]
    means = {name: _mean([adv[name][ti][k] for ti, k in node["members"]]) for name in adv}
    labels = Counter(trajs[ti]["labels"][k] for ti, k in node["members"] if trajs[ti]["labels"])
    label_html = "".join(f'<span class="lab {_e(lab)}">{_e(lab)}'
                         f'{f" ×{c}" if len(labels) > 1 else ""}</span>'
                         for lab, c in sorted(labels.items()))
    outcomes = Counter((trajs[ti]["success"], trajs[ti]["return"])
                       for ti, k in node["members"] if k == trajs[ti]["turns"] - 1)
    ends = "".join(f'<span class="end {_OUTCOME[ok][0]}">{_OUTCOME[ok][1]} {ret:.3g}'
                   f'{f" ×{c}" if c > 1 else ""}</span>'
                   for (ok, ret), c in sorted(outcomes.items(), key=str))
    anchor = (f'<span class="anchor">⚓{node["anchor"]}</span>'
              if node["anchor"] is not None else "")
    mean = means.get(default) if default else None
    style = f' style="{_colour(mean, scale)}"' if mean is not None else ""
    title = "\n".join([
        f"turn {node['turn']} · {len(node['members'])} member(s)"
        + "".join(f" · {lab} ×{c}" for lab, c in sorted(labels.items())),
        *(f"{name}: {'-' if m is None else f'{m:+.4f}'}" for name, m in means.items()),
        node["action"][:300]])
    short = node["action"] if len(node["action"]) <= 120 else node["action"][:117] + "..."
    size = len(node["members"])
    count = f' <span class="count">×{size}</span>' if size > 1 else ""
    kids = children.get(node["id"], [])
    sub = ("<ul>" + "".join(f"<li>{_node_html(data, g, c, children, default, scale)}</li>"
                            for c in kids) + "</ul>") if kids else ""
    return (f'<div class="node" data-g="{g}" data-n="{node["id"]}"{style} title="{_e(title)}">'
            f'<span class="turn">t{node["turn"]}</span> {_e(short)}{count}{label_html}{anchor}'
            f"{ends}</div>{sub}")


def render_group_html(data: dict[str, Any], *, title: str = "creditgym groups") -> str:
    """The page of ``group_page_data``'s ``data`` as a string."""
    names = data["estimators"]
    default = names[0] if names else None
    scale = max((abs(v) for per in data["advantages"].get(default, []) for v in per
                 if v is not None), default=0.0)
    nav, sections = [], []
    for g, grp in enumerate(data["groups"]):
        trajs = [data["trajectories"][i] for i in grp["trajectories"]]
        wins = sum(1 for t in trajs if t["success"])
        nav.append(f'<button data-g="{g}">{_e(grp["id"])} · {len(trajs)} traj, {wins} ✓<br>'
                   f'<span class="meta">{_e(grp["question"][:80])}</span></button>')
        children: dict[Any, list] = {}  # parent id (None: the roots) -> nodes
        for node in grp["nodes"]:
            children.setdefault(node["parent"], []).append(node)
        roots = "".join(f"<li>{_node_html(data, g, n, children, default, scale)}</li>"
                        for n in children.get(None, []))
        anchors = len({n["anchor"] for n in grp["nodes"] if n["anchor"] is not None})
        sections.append(
            f'<section class="group" data-g="{g}"{" hidden" if g else ""}>'
            f"<h2>group {_e(grp['id'])}</h2><p>{_e(grp['question'])}</p>"
            f'<p class="note">{len(trajs)} trajectories, {len(grp["nodes"])} nodes, '
            f"{anchors} recurring anchor state(s) (⚓); click a node for details</p>"
            f'<ul class="tree">{roots}</ul></section>')
    options = "".join(f'<option value="{_e(n)}">{_e(n)}</option>' for n in names)
    skipped = "".join(f'<p class="note">{_e(n)} not shown: {_e(why)}</p>'
                      for n, why in data["skipped"].items())
    payload = (json.dumps(data, ensure_ascii=False, allow_nan=False)
               .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
    return replace_surrogates(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<header><h1>{_e(title)}</h1>
<label>colour by <select id="estimator">{options}</select></label>
<span class="legend">advantage: <span id="lo" style="{_colour(-scale, scale)}">-{scale:.3g}</span>
<span id="hi" style="{_colour(scale, scale)}">+{scale:.3g}</span></span>
<span>labels: <span class="lab useful">useful</span><span class="lab wasted">wasted</span><span
class="lab harmful">harmful</span> · <span class="anchor">⚓</span> recurring anchor state</span>
</header>
<div id="layout"><nav>{"".join(nav)}</nav>
<main><p class="note">{_e(data["note"])}</p>{skipped}{"".join(sections)}</main>
<aside id="details"><p class="note">Click a node: its action, observation, each estimator's
advantage per member and the ground-truth labels.</p></aside></div>
<script type="application/json" id="group-data">{payload}</script>
<script>{_JS}</script>
</body></html>
""")
