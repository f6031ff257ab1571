"""replay html --groups: prefix trees of hand-built groups with exact node counts, and the page
on real built-in-world episodes: every registered estimator's advantages as ``estimate`` gives
them, the world's ground-truth labels, escaped hostile text, the output checks."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from creditgym.credit.adapter import flatten, tokens_to_turns
from creditgym.credit.registry import ESTIMATORS, estimate
from creditgym.envs.world.expert import expert_action
from creditgym.envs.world.labels import world_turn_labels
from creditgym.replay.cli import main
from creditgym.replay.group_view import prefix_tree
from creditgym.replay.io import read_trajectories, write_trajectories
from creditgym.replay.rescore import group_trajectories, rescore_trajectories
from tests.credit.helpers import make_traj
from tests.replay.helpers import POLICIES, record_episode


def text_traj(tid, actions, anchors):
    t = make_traj(tid, "g", [0.0] * len(actions), anchors=anchors)
    t.actions = list(actions)
    return t


# ----------------------------------------------------------------------- prefix trees by hand


def test_shared_turns_merge_divergence_branches_recurring_anchors_marked():
    group = [
        text_traj("A", ["s1", "s2", "ans"], ["q", "d1", "d2"]),
        text_traj("B", ["s1", "s2", "ans"], ["q", "d1", "d2"]),  # A again: merges throughout
        text_traj("C", ["s1", "s3", "ans"], ["q", "d1", "d3"]),  # branches at turn 1
        text_traj("D", ["x", "s1", "ans"], ["q", "q", "d1"]),  # a wasted turn: back at q, then d1
    ]
    nodes = prefix_tree(group)
    # s1 (A,B,C) -> s2 (A,B) -> ans; s1 -> s3 -> ans; x -> s1 -> ans
    assert len(nodes) == 8
    roots = [n for n in nodes if n.parent is None]
    assert [n.action for n in roots] == ["s1", "x"]
    s1 = roots[0]
    assert s1.members == [(0, 0), (1, 0), (2, 0)]
    assert [nodes[c].action for c in s1.children] == ["s2", "s3"]
    s2 = nodes[s1.children[0]]
    assert s2.members == [(0, 1), (1, 1)] and len(s2.children) == 1
    # q is the state of the roots and of D's second turn; d1 of s1's children and of D's last
    # turn: both reached through two histories. d2, d3 are seen once each: not marked.
    marks = {(n.turn, n.action, tuple(n.members)): n.anchor for n in nodes}
    assert marks == {
        (0, "s1", ((0, 0), (1, 0), (2, 0))): 1, (0, "x", ((3, 0),)): 1, (1, "s1", ((3, 1),)): 1,
        (1, "s2", ((0, 1), (1, 1))): 2, (1, "s3", ((2, 1),)): 2, (2, "ans", ((3, 2),)): 2,
        (2, "ans", ((0, 2), (1, 2))): None, (2, "ans", ((2, 2),)): None,
    }
    assert s1.anchor_rows == 5 and s2.anchor_rows == 4  # GiGPO's step groups of q and d1


def test_branches_alone_are_not_recurring_anchors():
    # every member diverges at once: three roots sharing the one start state, no recurrence
    group = [text_traj(x, [x, "ans"], ["q", f"after {x}"]) for x in "abc"]
    nodes = prefix_tree(group)
    assert len(nodes) == 6 and sum(n.parent is None for n in nodes) == 3
    assert all(n.anchor is None for n in nodes)
    # identical members: one chain; records without action text merge on their token ids
    same = [make_traj(t, "g", [0, 0, 1]) for t in "xyz"]
    chain = prefix_tree(same)
    assert len(chain) == 3 and [len(n.members) for n in chain] == [3, 3, 3]
    same[2].action_ids[1] = [99]  # z leaves the chain at turn 1: its turns 1 and 2 are new
    assert len(prefix_tree(same)) == 5


# ---------------------------------------------------------------- the page on real episodes


def repeat_first_search(task, turn, obs):
    """The expert, with its first search made twice (back at the same state)."""
    if turn <= 1:
        return expert_action(task, 0, task.question)
    return expert_action(task, turn - 1, obs)


def early_answer(task, turn, obs):
    return expert_action(task, turn, obs, early_answer_prob=1.0)


@pytest.fixture(scope="module")
def episodes(search_env, tokenizer):
    """Three two-or-more-hop tasks, each a group of six real episodes: the expert twice, an
    early (wrong) answer, a repeated first search, a wrong answer, an invalid action first."""
    tasks = [t for t in search_env.tasks if len(t.metadata["chain"]) >= 2][:3]
    policies = {"expert": POLICIES["expert"], "expert2": POLICIES["expert"],
                "early": early_answer, "repeat": repeat_first_search,
                "wrong": POLICIES["wrong"], "invalid": POLICIES["invalid"]}
    return [record_episode(search_env, task, policy, tid=f"g{g}-{name}", group=f"g{g}",
                           tokenizer=tokenizer, seed=g)
            for g, task in enumerate(tasks) for name, policy in policies.items()]


def page_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="group-data">(.*?)</script>', page,
                      re.DOTALL)
    return json.loads(found.group(1))


def render(tmp_path, trajs, *extra):
    src = write_trajectories(tmp_path / "rollouts.jsonl", trajs)
    out = tmp_path / "groups.html"
    assert main(["replay", "html", str(src), "-o", str(out), "--groups", *extra]) == 0
    page = out.read_text(encoding="utf-8")
    return page, page_data(page)


def test_real_group_tree(episodes):
    group = episodes[:6]
    expert, early, repeat, invalid = group[0], group[2], group[3], group[5]
    nodes = prefix_tree(group)
    # expert (twice) once, early's answer, repeat's turns after its first, wrong, invalid's all
    assert len(nodes) == expert.n_turns + 1 + (repeat.n_turns - 1) + 1 + invalid.n_turns
    roots = [n for n in nodes if n.parent is None]
    assert len(roots) == 3 and roots[0].members == [(0, 0), (1, 0), (2, 0), (3, 0)]
    # the repeated search saw the state the first search left: marked like the expert's turn 1
    again = next(n for n in nodes if n.members == [(3, 1)])
    after_again = nodes[again.children[0]]
    assert again.anchor is not None and after_again.anchor == again.anchor
    assert nodes[roots[0].children[0]].anchor == again.anchor
    assert early.anchors[1] == repeat.anchors[2]


def test_page_credit_equals_estimate_and_labels(tmp_path, episodes):
    page, data = render(tmp_path, episodes)
    groups = group_trajectories(read_trajectories(tmp_path / "rollouts.jsonl"))
    runnable = [n for n, e in ESTIMATORS.items() if not e.needs]
    assert data["estimators"] == runnable and len(runnable) >= 4
    assert set(data["skipped"]) == {n for n in ESTIMATORS if n not in runnable}
    assert all(why.startswith("needs input") for why in data["skipped"].values())
    batch = flatten(groups)
    splits = np.cumsum(batch.n_turns)[:-1]
    for name in runnable:
        per_turn = tokens_to_turns(batch, estimate(groups, name).advantages)
        assert data["advantages"][name] == [a.tolist() for a in np.split(per_turn, splits)]
    # step-level credit differs between merged members' turns, trajectory-level does not
    assert data["advantages"]["gigpo"] != data["advantages"]["grpo"]
    trajs = [t for g in groups for t in g]
    assert [t["id"] for t in data["trajectories"]] == [t.id for t in trajs]
    assert [t["labels"] for t in data["trajectories"]] == [world_turn_labels(t) for t in trajs]
    assert all(t["labels"] for t in data["trajectories"])
    assert {"useful", "harmful", "wasted"} <= {x for t in data["trajectories"] for x in t["labels"]}
    for cls in ("lab useful", "lab harmful", "lab wasted", "anchor"):
        assert f'<span class="{cls}">' in page
    assert len(data["groups"]) == 3 and data["note"].startswith("3 of 3 groups shown")
    assert page.count('<div class="node"') == sum(len(g["nodes"]) for g in data["groups"])
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)


def test_recorded_advantages_and_max_groups(tmp_path, episodes, capsys):
    scored = rescore_trajectories(episodes, credit="gigpo").trajectories
    page, data = render(tmp_path, scored, "--max-groups", "2")
    assert "recorded" in data["estimators"]
    shown = len(data["trajectories"])
    assert shown == 12 and data["advantages"]["recorded"] == data["advantages"]["gigpo"]
    assert data["note"].startswith("2 of 3 groups shown (the first in file order")
    assert "2 of 3 groups shown" in page and "2 of 3 groups shown" in capsys.readouterr().err
    out = tmp_path / "one.html"
    args = ["replay", "html", str(tmp_path / "rollouts.jsonl"), "-o", str(out), "--groups"]
    assert main([*args, "--group", "g2"]) == 0
    assert [g["id"] for g in page_data(out.read_text(encoding="utf-8"))["groups"]] == ["g2"]
    assert main([*args, "--group", "nope", "--force"]) == 2
    assert "no group 'nope'" in capsys.readouterr().err


def test_hostile_text_is_escaped(tmp_path, episodes):
    trajs = [t.__class__.from_dict(t.to_dict()) for t in episodes[:6]]
    evil = "</script><script>alert(1)</script><img src=x onerror=alert(2)> \ud800 &amp;"
    trajs[4].actions[0] = evil
    trajs[4].observations[0] = evil
    trajs[4].task["question"] = evil
    page, data = render(tmp_path, trajs)
    assert page.count("<script") == 2  # the data block and the page's own script
    assert "<img" not in page and "<script>alert" not in page and "\ud800" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page  # the node and title text
    node = next(n for n in data["groups"][0]["nodes"] if n["members"] == [[4, 0]])
    assert node["action"] == node["observation"] == evil.replace("\ud800", "\ufffd")


def test_refuses_to_overwrite_and_wrong_flags(tmp_path, episodes, capsys):
    src = write_trajectories(tmp_path / "r.jsonl", episodes[:6])
    before = src.read_bytes()
    assert main(["replay", "html", str(src), "-o", str(src), "--groups", "--force"]) == 2
    assert "is the input" in capsys.readouterr().err and src.read_bytes() == before
    out = tmp_path / "taken.html"
    out.write_text("keep")
    assert main(["replay", "html", str(src), "-o", str(out), "--groups"]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "keep"
    assert main(["replay", "html", str(src), "-o", str(out), "--groups", "--force"]) == 0
    assert page_data(out.read_text(encoding="utf-8"))["groups"]
    for extra in (["--groups", "--id", "g0-expert"], ["--max-groups", "3"]):
        assert main(["replay", "html", str(src), "-o", str(tmp_path / "x.html"), *extra]) == 2
        assert "--groups" in capsys.readouterr().err


def test_untrusted_env_ids_and_text_only_records(tmp_path, episodes, capsys):
    import sys

    trajs = [t.__class__.from_dict(t.to_dict()) for t in episodes[:6]]
    trajs[1].env_id = "group_view_evil:Evil-v0"  # labels would import the module it names
    src = write_trajectories(tmp_path / "evil.jsonl", trajs)
    assert main(["replay", "html", str(src), "-o", str(tmp_path / "e.html"), "--groups"]) == 2
    assert "--allow-module group_view_evil" in capsys.readouterr().err
    assert "group_view_evil" not in sys.modules and not (tmp_path / "e.html").exists()
    trajs[1].env_id = trajs[0].env_id
    for t in trajs:  # demonstrations: text, no token ids: trees and labels, but no credit
        t.action_ids = [[] for _ in t.action_ids]
        t.action_logprobs = [[] for _ in t.action_ids]
    page, data = render(tmp_path, trajs)
    assert data["estimators"] == [] and set(data["skipped"]) == set(ESTIMATORS)
    assert "no action token ids" in data["skipped"]["grpo"]
    assert len(data["groups"][0]["nodes"]) == len(prefix_tree(trajs))
    assert all(t["labels"] for t in data["trajectories"])


_DOM_STUB = r"""
// Just enough DOM for the page's script: its elements from the page, events by hand.
const page = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'));
function make(tag, dataset) {
  const e = {tagName: tag, dataset: dataset || {}, style: {}, children: [], textContent: '',
    className: '', hidden: false, listeners: {}, value: '', classes: new Set()};
  e.classList = {add: c => e.classes.add(c), remove: c => e.classes.delete(c),
    contains: c => e.classes.has(c),
    toggle: (c, on) => on ? e.classes.add(c) : e.classes.delete(c)};
  e.addEventListener = (ev, fn) => { e.listeners[ev] = fn; };
  e.append = (...c) => e.children.push(...c);
  e.replaceChildren = () => { e.children = []; };
  return e;
}
const nodes = page.nodes.map(([g, n]) => make('div', {g: String(g), n: String(n)}));
const byId = {'group-data': Object.assign(make('script'), {textContent: page.data}),
  estimator: Object.assign(make('select'), {value: page.first}),
  details: make('aside'), lo: make('span'), hi: make('span')};
const buttons = page.groups.map(g => make('button', {g: String(g)}));
const sections = page.groups.map(g => make('section', {g: String(g)}));
global.document = {
  getElementById: id => byId[id],
  createElement: tag => make(tag),
  querySelectorAll: sel => ({'nav button': buttons, 'section.group': sections, '.node': nodes,
    '.node.selected': nodes.filter(e => e.classes.has('selected'))})[sel],
  querySelector: sel => {
    if (sel === '.node.selected') return nodes.find(e => e.classes.has('selected'));
    const [, g, n] = sel.match(/data-g="(\d+)"\]\[data-n="(\d+)"/);
    return nodes.find(e => e.dataset.g === g && e.dataset.n === n);
  },
};
eval(page.script);
const texts = e => [e.textContent, ...e.children.flatMap(texts)];
const out = {colours: {}, hidden: sections.map(s => s.hidden)};
for (const name of page.estimators) {
  byId.estimator.value = name;
  byId.estimator.listeners.input();
  out.colours[name] = nodes.map(e => e.style.background);
}
nodes[page.click].listeners.click({stopPropagation: () => {}});
out.details = texts(byId.details).filter(Boolean);
out.selected = nodes.filter(e => e.classes.has('selected')).map(e => [e.dataset.g, e.dataset.n]);
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_page_script_colours_by_the_chosen_estimator(tmp_path, episodes):
    """The script runs (node, a stub DOM): switching estimator colours every node by its
    members' mean advantage under that estimator; a click fills the details panel."""
    page, data = render(tmp_path, episodes)
    script = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)[-1]
    boxes = [(int(g), int(n)) for g, n in re.findall(r'<div class="node" data-g="(\d+)" '
                                                     r'data-n="(\d+)"', page)]
    click = next(i for i, (g, n) in enumerate(boxes)  # a one-member node that saw something
                 if len(data["groups"][g]["nodes"][n]["members"]) == 1
                 and data["groups"][g]["nodes"][n]["observation"])
    payload = {"script": script, "data": json.dumps(data), "nodes": boxes,
               "groups": list(range(len(data["groups"]))), "estimators": data["estimators"],
               "first": data["estimators"][0], "click": click}
    (tmp_path / "page.json").write_text(json.dumps(payload))
    (tmp_path / "run.js").write_text(_DOM_STUB)
    proc = subprocess.run(["node", str(tmp_path / "run.js"), str(tmp_path / "page.json")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["hidden"] == [False, True, True]  # the first group shown
    for name in data["estimators"]:
        adv = data["advantages"][name]
        scale = max(abs(v) for per in adv for v in per)
        for (g, n), colour in zip(boxes, out["colours"][name]):
            node = data["groups"][g]["nodes"][n]
            mean = float(np.mean([adv[ti][k] for ti, k in node["members"]]))
            rgb, alpha = re.fullmatch(r"rgba\((\d+,\d+,\d+),([0-9.]+)\)", colour).groups()
            assert rgb == ("0,170,60" if mean > 0 else "220,30,30")
            assert float(alpha) == pytest.approx(min(abs(mean) / scale, 1) * 0.8, abs=1e-3)
    g, n = boxes[click]
    node = data["groups"][g]["nodes"][n]
    assert out["selected"] == [[str(g), str(n)]]
    assert node["action"] in out["details"] and node["observation"] in out["details"]
    (ti, k), = node["members"]
    assert data["trajectories"][ti]["labels"][k] in out["details"]
    assert f"{data['advantages']['gigpo'][ti][k]:+.4f}" in out["details"]
