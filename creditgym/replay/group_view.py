"""The credit microscope: each trajectory group drawn as its prefix tree, coloured by credit.

``prefix_tree(group)`` merges the turns of a group's trajectories into a tree: a turn becomes the
node of (its parent node, its action text), so turns with the same action after the same earlier
actions are one node (the members of a group share task and seed, so they share the state too)
and the tree branches where the members' actions diverge. A node lists its members as
``(trajectory index in the group, turn)``. A node's anchor (``anchors[turn]``: the state before
its action, what GiGPO groups on) is *recurring* when the same anchor is also the state of
another tree position, i.e. the state was reached through two different histories; sibling nodes
share their state by construction, so a branch alone is not a recurrence. Recurring anchors are
numbered 1, 2, ... in order of first appearance and every node at such a state shows its number.
A record without action text keys its turns by their action token ids.

``group_page_data`` adds credit and ground truth: every registered estimator's per-turn
advantages, computed offline by ``bench.credit_bench.run_estimators`` (the registry's ``estimate``
on all the given groups, so estimators that normalise over the batch give what the credit bench
scores; estimators whose inputs are missing are listed as skipped with the reason), the
advantages recorded in the file (``"recorded"``) when every trajectory carries them, and the
environment's ``turn_labels`` (``bench.labels``, behind ``replay.trust``'s check of the env id).
``replay.group_page.render_group_html`` draws it as one self-contained page (inline CSS/JS):
a selector of the estimator that colours the nodes, and a details panel per node (action,
observation cut to ``MAX_OBSERVATION_CHARS``, each estimator's advantage per member, labels).

Only ``max_groups`` groups are drawn (the first in file order, or those named), and the page
says how many there were, so a file of thousands of trajectories still gives a usable page.
``creditgym replay html FILE --groups`` (``cmd_group_html``) writes it through the project's
atomic writer after the replay commands' output checks.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from creditgym.envs.text_space import truncate_text
from creditgym.errors import ConfigError, CreditGymError
from creditgym.files import atomic_write_text
from creditgym.trajectory import Trajectory

MAX_GROUPS = 50
MAX_OBSERVATION_CHARS = 600
MAX_ACTION_CHARS = 2000
RECORDED = "recorded"
"""Name of the advantages stored in the file itself, next to the estimators."""


@dataclass
class TreeNode:
    """One node of a group's prefix tree: an action taken after one sequence of earlier actions."""

    id: int
    parent: int | None
    turn: int
    action: str
    members: list[tuple[int, int]] = field(default_factory=list)
    """(trajectory index in the group, turn) of every turn merged into this node."""
    children: list[int] = field(default_factory=list)
    anchor: int | None = None
    """Number of the recurring anchor this node's state is (1, 2, ...), or None."""
    anchor_rows: int = 0
    """Turns of the group whose anchor is this node's (the size of GiGPO's step group)."""


def _action_key(t: Trajectory, turn: int) -> str:
    if t.actions:
        return t.actions[turn]
    return f"<{len(t.action_ids[turn])} token ids; action text not recorded> {t.action_ids[turn]}"


def anchor_key(anchor: Any) -> str:
    """An anchor as comparable text (anchors are JSON values: text, lists, mappings)."""
    if isinstance(anchor, str):
        return anchor
    return json.dumps(anchor, sort_keys=True, ensure_ascii=False, default=str)


def prefix_tree(group: Sequence[Trajectory]) -> list[TreeNode]:
    """The group's prefix tree (see the module docstring), nodes in order of creation."""
    nodes: list[TreeNode] = []
    by_key: dict[tuple[int | None, str], int] = {}
    for i, t in enumerate(group):
        parent = None
        for turn in range(t.n_turns):
            key = (parent, _action_key(t, turn))
            if key not in by_key:
                by_key[key] = len(nodes)
                nodes.append(TreeNode(len(nodes), parent, turn, key[1]))
                if parent is not None:
                    nodes[parent].children.append(by_key[key])
            node = nodes[by_key[key]]
            node.members.append((i, turn))
            parent = node.id
    # where (at which parent position) each anchor is the state, and how many turns see it
    positions: dict[str, set[int | None]] = {}
    rows: Counter[str] = Counter()
    node_anchors = []
    for node in nodes:
        keys = {anchor_key(group[i].anchors[turn]) for i, turn in node.members}
        node_anchors.append(keys)
        for i, turn in node.members:
            rows[anchor_key(group[i].anchors[turn])] += 1
        for k in keys:
            positions.setdefault(k, set()).add(node.parent)
    numbers: dict[str, int] = {}
    for node, keys in zip(nodes, node_anchors):
        recurring = [k for k in keys if len(positions[k]) > 1]
        for k in recurring:
            numbers.setdefault(k, len(numbers) + 1)
        if recurring:
            node.anchor = min(numbers[k] for k in recurring)
        node.anchor_rows = max(rows[k] for k in keys)
    return nodes


# ------------------------------------------------------------------------------- page data


def _finite(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def turn_credit(groups: Sequence[Sequence[Trajectory]], progress: Any = None
                ) -> tuple[dict[str, list[list[float | None]]], dict[str, str]]:
    """Per estimator (registry order, then ``"recorded"``) one list of per-turn advantages per
    trajectory of ``groups`` (in order), and the skipped estimators with the reason."""
    from creditgym.bench.credit_bench import estimator_names, run_estimators
    from creditgym.credit.adapter import flatten, tokens_to_turns

    trajs = [t for g in groups for t in g]
    splits = np.cumsum([t.n_turns for t in trajs])[:-1]
    advantages: dict[str, list[list[float | None]]] = {}
    text_only = next((t.id for t in trajs if not any(t.action_ids)), None)
    if text_only is not None:  # credit lives on action tokens: these turns have none
        why = f"trajectory {text_only!r} has no action token ids (a text-only record)"
        return advantages, {name: why for name in estimator_names()}
    skipped: dict[str, str] = {}
    for run in run_estimators(groups, progress=progress):
        if run.skipped is not None:
            skipped[run.estimator] = run.skipped
        else:
            advantages[run.estimator] = [_finite(a) for a in np.split(run.advantages, splits)]
    if trajs and all(t.advantages is not None for t in trajs):
        try:
            rec = tokens_to_turns(flatten(groups), [t.advantages for t in trajs])
            advantages[RECORDED] = [_finite(a) for a in np.split(rec, splits)]
        except CreditGymError as exc:
            skipped[RECORDED] = f"the file's advantages do not align with its tokens: {exc}"
    return advantages, skipped


def group_page_data(groups: Sequence[Sequence[Trajectory]], shown: Sequence[int],
                    labels: Sequence[Sequence[str] | None], *, progress: Any = None,
                    note: str = "") -> dict[str, Any]:
    """What the page embeds: ``groups[i]`` for ``i`` in ``shown`` drawn, credit computed on all
    ``groups``; ``labels`` align with the trajectories of the shown groups in order."""
    first = np.cumsum([0] + [len(g) for g in groups])
    picked = [j for i in shown for j in range(first[i], first[i + 1])]
    if len(labels) != len(picked):
        raise CreditGymError(f"labels: expected one entry per shown trajectory ({len(picked)}), "
                             f"got {len(labels)}")
    advantages, skipped = turn_credit(groups, progress)
    data: dict[str, Any] = {
        "estimators": list(advantages), "skipped": skipped, "note": note,
        "advantages": {name: [per_traj[j] for j in picked]
                       for name, per_traj in advantages.items()},
        "trajectories": [], "groups": [],
    }
    index = 0
    for i in shown:
        group = groups[i]
        base = index
        for t in group:
            data["trajectories"].append({
                "id": t.id, "turns": t.n_turns, "return": t.episode_return, "success": t.success,
                "labels": None if labels[index] is None else list(labels[index])})
            index += 1
        nodes = prefix_tree(group)
        data["groups"].append({
            "id": group[0].group, "question": str(group[0].task.get("question", "")),
            "trajectories": list(range(base, base + len(group))),
            "nodes": [{
                "id": n.id, "parent": n.parent, "turn": n.turn,
                "action": truncate_text(n.action, MAX_ACTION_CHARS),
                "observation": _observation(group, n),
                "members": [[base + m, turn] for m, turn in n.members],
                "anchor": n.anchor, "anchor_rows": n.anchor_rows,
            } for n in nodes],
        })
    return data


def _observation(group: Sequence[Trajectory], node: TreeNode) -> str:
    seen = list(dict.fromkeys(group[i].observations[turn] for i, turn in node.members
                              if group[i].observations))
    if not seen:
        return ""
    text = truncate_text(seen[0], MAX_OBSERVATION_CHARS)
    return text + (f"\n[members saw {len(seen)} different observations]" if len(seen) > 1 else "")


# ---------------------------------------------------------------------------------- command


def write_group_html(data: dict[str, Any], out: str | Path, **kwargs: Any) -> Path:
    """Write ``render_group_html(data, **kwargs)`` to ``out``, atomically."""
    from creditgym.replay.group_page import render_group_html

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render_group_html(data, **kwargs))
    return out


def shown_groups(groups: Sequence[Sequence[Trajectory]], names: Sequence[str] | None,
                 max_groups: int) -> list[int]:
    """Indices of the groups to draw: those ``names`` names (in file order), else the first
    ``max_groups``; at most ``max_groups`` either way."""
    if max_groups < 1:
        raise ConfigError(f"--max-groups must be at least 1, got {max_groups}")
    if not names:
        return list(range(min(max_groups, len(groups))))
    index = {g[0].group: i for i, g in enumerate(groups)}
    missing = [n for n in names if n not in index]
    if missing:
        known = ", ".join(list(index)[:8]) + (", ..." if len(index) > 8 else "")
        raise ConfigError(f"no group {missing[0]!r} with a finished trajectory in the file "
                          f"(groups: {known}); `creditgym replay show FILE` lists them")
    return sorted({index[n] for n in names})[:max_groups]


def cmd_group_html(args: argparse.Namespace) -> int:
    """``creditgym replay html FILE --groups``: the group view page (see the module docstring)."""
    from tqdm import tqdm

    from creditgym.bench.labels import turn_labels
    from creditgym.replay.cli import check_replay_output, load
    from creditgym.replay.rescore import group_trajectories
    from creditgym.replay.trust import EnvPolicy

    for flag, value in (("--id", args.id), ("--tokenizer", args.tokenizer),
                        ("--limit", args.limit)):
        if value is not None:
            raise ConfigError(f"{flag} does not apply to --groups, which draws whole groups; "
                              "choose them with --group ID or --max-groups N")
    max_groups = MAX_GROUPS if args.max_groups is None else args.max_groups
    check_replay_output(args)
    trajs = load(args.file)
    finished = [t for t in trajs if t.error is None and t.n_turns > 0]
    groups = group_trajectories(finished)
    if not groups:
        raise ConfigError(f"{args.file}: no finished trajectory to draw (every record failed or "
                          "has no turns)")
    shown = shown_groups(groups, args.group, max_groups)
    how = ("named by --group" if args.group
           else f"the first in file order; --max-groups {max_groups}")
    note = f"{len(shown)} of {len(groups)} groups shown ({how})."
    if len(finished) < len(trajs):
        note += f" {len(trajs) - len(finished)} failed or empty trajectories left out."
    policy = EnvPolicy(allow_modules=tuple(args.allow_module or ()))
    labels = turn_labels([t for i in shown for t in groups[i]], policy)
    progress = lambda names: tqdm(names, desc="estimators", unit="estimator", leave=False,
                                  disable=not sys.stderr.isatty())
    data = group_page_data(groups, shown, labels, progress=progress, note=note)
    out = write_group_html(data, args.out,
                           title=args.title or f"creditgym groups: {Path(args.file).name}")
    if len(shown) < len(groups):
        print(f"note: {note}", file=sys.stderr)
    print(out)
    return 0
