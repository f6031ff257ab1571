"""One self-contained HTML page to browse trajectories: no network, inline CSS and JS.

The page lists the trajectories on the left (filterable by group, success and free text) and
shows one at a time: the task, the prompt messages, then per turn the action, tool calls,
observation, reward and valid flag. Advantages colour the action: green for positive, red for
negative, the intensity relative to the largest magnitude on the page. Given a way to decode token
ids (``decode_tokens``, e.g. from a tokenizer folder via ``tokenizer_decoder``) every action
token is its own coloured span whose tooltip is its advantage; without one each action is one
span coloured by its turn's mean advantage. Everything is rendered on the server side and every
piece of text is escaped (observations contain tags such as ``<information>``), so the page
reads the same with scripts off; the script only filters and switches trajectories.

A lone surrogate in a record (``"\\ud800"``: valid in JSON, not in UTF-8) shows as U+FFFD.
``write_html`` replaces ``out`` atomically: a failure leaves an existing file as it was.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from creditgym.files import atomic_write_text, replace_surrogates
from creditgym.replay.show import turn_advantages
from creditgym.trajectory import Trajectory

DecodeTokens = Callable[[list[int]], list[str]]
"""Token ids -> the text of each token (one string per id)."""

_CSS = """
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: #1d1d1f; background: #fafafa; }
header { padding: 8px 14px; background: #24292f; color: #fff; display: flex; gap: 12px;
  align-items: center; flex-wrap: wrap; }
header h1 { font-size: 16px; margin: 0 12px 0 0; }
header select, header input { font: inherit; padding: 2px 4px; }
#layout { display: flex; height: calc(100vh - 46px); }
nav { width: 300px; overflow-y: auto; border-right: 1px solid #ddd; background: #fff; }
nav button { display: block; width: 100%; text-align: left; border: 0; border-bottom: 1px solid #eee;
  background: none; padding: 6px 10px; cursor: pointer; font: inherit; }
nav button:hover { background: #f0f4ff; } nav button.active { background: #dbe7ff; }
nav .meta { color: #666; font-size: 12px; }
main { flex: 1; overflow-y: auto; padding: 12px 18px; }
.ok { color: #137333; font-weight: 600; } .bad { color: #c5221f; font-weight: 600; }
.turn { background: #fff; border: 1px solid #ddd; border-radius: 6px; margin: 10px 0; padding: 8px 12px; }
.turn h3 { margin: 0 0 6px; font-size: 14px; }
pre { white-space: pre-wrap; word-break: break-word; margin: 4px 0; padding: 6px 8px;
  background: #f6f8fa; border-radius: 4px; font: 12.5px/1.4 ui-monospace, monospace; }
pre.action { background: #fff; border: 1px solid #e4e4e4; }
.tok { border-radius: 2px; }
table.kv { border-collapse: collapse; font-size: 12.5px; }
table.kv td { padding: 1px 8px 1px 0; vertical-align: top; }
.legend span { padding: 0 6px; border-radius: 2px; }
.err { color: #c5221f; font-weight: 600; }
"""

_JS = """
const nav = document.getElementById('list');
const buttons = Array.from(nav.querySelectorAll('button'));
const articles = Array.from(document.querySelectorAll('article.traj'));
function select(i) {
  articles.forEach(a => a.hidden = a.dataset.index !== String(i));
  buttons.forEach(b => b.classList.toggle('active', b.dataset.index === String(i)));
}
function applyFilters() {
  const g = document.getElementById('f-group').value;
  const s = document.getElementById('f-success').value;
  const q = document.getElementById('f-text').value.toLowerCase();
  let shown = 0, firstShown = null;
  buttons.forEach(b => {
    const ok = (!g || b.dataset.group === g) && (!s || b.dataset.success === s) &&
      (!q || b.dataset.search.includes(q));
    b.hidden = !ok;
    if (ok) { shown++; if (firstShown === null) firstShown = b.dataset.index; }
  });
  document.getElementById('count').textContent = shown + ' / ' + buttons.length;
  const active = buttons.find(b => b.classList.contains('active') && !b.hidden);
  if (!active && firstShown !== null) select(firstShown);
}
buttons.forEach(b => b.addEventListener('click', () => select(b.dataset.index)));
['f-group', 'f-success', 'f-text'].forEach(id =>
  document.getElementById(id).addEventListener('input', applyFilters));
if (buttons.length) select(buttons[0].dataset.index);
applyFilters();
"""


def tokenizer_decoder(path: str | Path) -> DecodeTokens:
    """Token-text decoder of a local tokenizer folder (``AutoTokenizer.from_pretrained``)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))

    def decode(ids: list[int]) -> list[str]:
        return tokenizer.batch_decode([[i] for i in ids])

    return decode


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _colour(value: float, scale: float) -> str:
    alpha = min(abs(value) / scale, 1.0) * 0.8 if scale > 0 else 0.0
    rgb = "0,170,60" if value > 0 else "220,30,30"
    return f"background:rgba({rgb},{alpha:.3f})"


def _success_key(t: Trajectory) -> str:
    ok = t.success
    return "unknown" if ok is None else ("yes" if ok else "no")


def _kv(pairs: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td>{_e(f'{v:.4g}' if isinstance(v, float) else v)}</td></tr>"
        for k, v in pairs.items()
    )
    return f'<table class="kv">{rows}</table>'


def _action_html(
    t: Trajectory, k: int, advs: list[np.ndarray] | None, scale: float, decode: DecodeTokens | None
) -> str:
    text = t.actions[k] if t.actions else None
    if advs is not None and decode is not None and t.action_ids[k]:
        pieces = decode(list(t.action_ids[k]))
        spans = "".join(
            f'<span class="tok" style="{_colour(a, scale)}" title="advantage {a:+.4f}">{_e(p)}</span>'
            for p, a in zip(pieces, advs[k])
        )
        return f'<pre class="action">{spans}</pre>'
    if text is None:
        text = f"<{len(t.action_ids[k])} token ids; action text not recorded>"
    if advs is not None and advs[k].size:
        mean = float(advs[k].mean())
        return (
            f'<pre class="action"><span class="tok turn-adv" style="{_colour(mean, scale)}" '
            f'title="mean advantage {mean:+.4f}">{_e(text)}</span></pre>'
        )
    return f'<pre class="action">{_e(text)}</pre>'


def _trajectory_html(i: int, t: Trajectory, scale: float, decode: DecodeTokens | None) -> str:
    advs = turn_advantages(t)
    ok = t.success
    status = (
        ""
        if ok is None
        else (f'<span class="{"ok" if ok else "bad"}">{"success" if ok else "failure"}</span>')
    )
    end = "terminated" if t.terminated else "truncated" if t.truncated else "not ended"
    out = [
        f'<article class="traj" data-index="{i}" {"hidden" if i else ""}>',
        f"<h2>{_e(t.id)} {status}</h2>",
        _kv(
            {
                "question": t.task.get("question", ""),
                "golden answers": ", ".join(map(str, t.task.get("golden_answers", []))),
                "task id": t.task.get("id", ""),
                "group": t.group,
                "env": f"{t.env_id or '?'} {json.dumps(t.env_kwargs, ensure_ascii=False)} seed={t.seed}",
                "return": f"{t.episode_return:.4g} ({end})",
                "tokens": f"prompt {len(t.prompt_ids)}, total {len(t.tokens())}",
            }
        ),
    ]
    if t.error:
        out.append(f'<p class="err">error: {_e(t.error)}</p>')
    if t.prompt_messages:
        msgs = "".join(
            f"<pre><b>{_e(m.get('role', ''))}</b>\n{_e(m.get('content', ''))}</pre>"
            for m in t.prompt_messages
        )
        out.append(f"<details><summary>prompt messages</summary>{msgs}</details>")
    for k in range(t.n_turns):
        reward = f"reward {t.rewards[k]:.4g}"
        valid = (
            '<span class="ok">valid</span>' if t.valid[k] else '<span class="bad">invalid</span>'
        )
        extra = f" · finish {_e(t.finish_reasons[k])}" if t.finish_reasons else ""
        if advs is not None and advs[k].size:
            extra += f" · mean advantage {advs[k].mean():+.4f}"
        out.append(f'<div class="turn"><h3>turn {k} · {reward} · {valid}{extra}</h3>')
        out.append(_action_html(t, k, advs, scale, decode))
        if t.tool_calls and t.tool_calls[k]:
            calls = "; ".join(
                f"{c.get('name')}({json.dumps(c.get('arguments'), ensure_ascii=False)})"
                + ("" if c.get("ok", True) else f" failed: {c.get('error')}")
                for c in t.tool_calls[k]
            )
            out.append(f"<div>tools: {_e(calls)}</div>")
        if t.observations and t.observations[k]:
            out.append(f"<pre>{_e(t.observations[k])}</pre>")
        if t.turn_metrics:
            out.append(f"<details><summary>metrics</summary>{_kv(t.turn_metrics[k])}</details>")
        out.append("</div>")
    if t.metrics:
        out.append(f"<h3>outcome</h3>{_kv(t.metrics)}")
    out.append("</article>")
    return "\n".join(out)


def render_html(
    trajectories: Sequence[Trajectory],
    *,
    title: str = "creditgym trajectories",
    decode_tokens: DecodeTokens | None = None,
) -> str:
    """The page as a string."""
    scale = 0.0
    for t in trajectories:
        for a in turn_advantages(t) or []:
            if a.size:
                scale = max(scale, float(np.abs(a).max()))
    groups = sorted({t.group for t in trajectories})
    group_opts = "".join(f'<option value="{_e(g)}">{_e(g)}</option>' for g in groups)
    items = []
    for i, t in enumerate(trajectories):
        search = f"{t.id} {t.task.get('question', '')} {t.task.get('id', '')}".lower()
        mark = {"yes": "✓", "no": "✗", "unknown": "·"}[_success_key(t)]
        items.append(
            f'<button data-index="{i}" data-group="{_e(t.group)}" data-success="{_success_key(t)}" '
            f'data-search="{_e(search)}">{mark} {_e(t.id)}<br><span class="meta">'
            f"{_e(str(t.task.get('question', ''))[:80])} · return {t.episode_return:.3g}</span></button>"
        )
    body = "\n".join(
        _trajectory_html(i, t, scale, decode_tokens) for i, t in enumerate(trajectories)
    )
    legend = (
        f'<span class="legend">advantage: <span style="{_colour(-scale, scale)}">'
        f'-{scale:.3g}</span> <span style="{_colour(scale, scale)}">+{scale:.3g}</span></span>'
        if scale > 0
        else ""
    )
    return replace_surrogates(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<header><h1>{_e(title)}</h1>
<label>group <select id="f-group"><option value="">all</option>{group_opts}</select></label>
<label>success <select id="f-success"><option value="">all</option><option value="yes">yes</option>
<option value="no">no</option><option value="unknown">unknown</option></select></label>
<input id="f-text" type="search" placeholder="filter by id or question">
<span id="count">{len(trajectories)} / {len(trajectories)}</span>{legend}
</header>
<div id="layout"><nav id="list">{"".join(items)}</nav>
<main>{body}</main></div>
<script>{_JS}</script>
</body></html>
""")


def write_html(trajectories: Sequence[Trajectory], out: str | Path, **kwargs: Any) -> Path:
    """Write ``render_html(trajectories, **kwargs)`` to ``out``, atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render_html(trajectories, **kwargs))
    return out
