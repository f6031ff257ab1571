"""Flatten trajectories to a table that pandas and ``datasets`` load: parquet or JSONL.

One row per trajectory (id, group, task id, question, golden answers, number of turns, return,
end, error, one ``metric/<name>`` column per outcome metric, the actions joined), or with
``per_turn`` one row per turn (action, observation, reward, valid, anchor, tool names, finish
reason, ``metric/<name>`` per-turn metrics, mean advantage of the turn's tokens). Every row has
every column (missing values are null) and numeric metrics are floats, so the column types are
the same in every row, which the parquet and ``datasets`` JSON loaders need.

The table is written atomically (a temporary file renamed into place), so a failed export leaves
an existing file as it was. Strings holding a lone surrogate (``"\\ud800"``, which a JSON record
can carry but UTF-8 cannot) are kept as JSON escapes in JSONL and become U+FFFD in parquet.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from creditgym.files import atomic_writer, json_line, scrub_surrogates
from creditgym.replay.show import turn_advantages
from creditgym.trajectory import Trajectory

ACTION_SEPARATOR = "\n<|turn|>\n"
"""Joins the per-turn action texts in the ``actions`` column of per-trajectory rows."""


def _metric_value(v: Any) -> Any:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return None if v is None else json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v


def _anchor_text(a: Any) -> str:
    return a if isinstance(a, str) else json.dumps(a, ensure_ascii=False)


def trajectory_rows(trajectories: Sequence[Trajectory]) -> list[dict[str, Any]]:
    """One row per trajectory."""
    rows = []
    for t in trajectories:
        rows.append(
            {
                "id": t.id,
                "group": t.group,
                "task_id": str(t.task.get("id", "")),
                "question": str(t.task.get("question", "")),
                "golden_answers": [str(a) for a in t.task.get("golden_answers", [])],
                "data_source": str(t.task.get("data_source", "")),
                "env_id": t.env_id,
                "seed": t.seed,
                "n_turns": t.n_turns,
                "return": t.episode_return,
                "success": t.success,
                "terminated": t.terminated,
                "truncated": t.truncated,
                "error": t.error,
                "prompt_tokens": len(t.prompt_ids),
                "action_tokens": sum(map(len, t.action_ids)),
                "actions": ACTION_SEPARATOR.join(t.actions),
                "created": t.created,
                **{f"metric/{k}": _metric_value(v) for k, v in t.metrics.items()},
            }
        )
    return _fill(rows)


def turn_rows(trajectories: Sequence[Trajectory]) -> list[dict[str, Any]]:
    """One row per turn."""
    rows = []
    for t in trajectories:
        advs = turn_advantages(t)
        for k in range(t.n_turns):
            rows.append(
                {
                    "id": t.id,
                    "group": t.group,
                    "task_id": str(t.task.get("id", "")),
                    "turn": k,
                    "action": t.actions[k] if t.actions else None,
                    "observation": t.observations[k] if t.observations else None,
                    "reward": float(t.rewards[k]),
                    "valid": bool(t.valid[k]),
                    "anchor": _anchor_text(t.anchors[k]),
                    "tools": [str(c.get("name")) for c in t.tool_calls[k]] if t.tool_calls else [],
                    "finish_reason": t.finish_reasons[k] if t.finish_reasons else None,
                    "action_tokens": len(t.action_ids[k]),
                    "advantage_mean": float(advs[k].mean())
                    if advs is not None and advs[k].size
                    else None,
                    **(
                        {f"metric/{m}": _metric_value(v) for m, v in t.turn_metrics[k].items()}
                        if t.turn_metrics
                        else {}
                    ),
                }
            )
    return _fill(rows)


def _fill(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every row every column (first-seen order), None where missing."""
    columns: dict[str, None] = {}
    for r in rows:
        columns.update(dict.fromkeys(r))
    return [{c: r.get(c) for c in columns} for r in rows]


def export_table(
    trajectories: Sequence[Trajectory],
    out: str | Path,
    *,
    format: Literal["parquet", "jsonl"] | None = None,
    per_turn: bool = False,
) -> Path:
    """Write the rows to ``out`` as parquet or JSONL (``format`` None: from the suffix,
    ``.parquet`` or else JSONL)."""
    out = Path(out)
    fmt = format or ("parquet" if out.suffix == ".parquet" else "jsonl")
    rows = turn_rows(trajectories) if per_turn else trajectory_rows(trajectories)
    if fmt not in ("parquet", "jsonl"):
        raise ValueError(f"export format must be 'parquet' or 'jsonl', got {fmt!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([scrub_surrogates(r) for r in rows])
        with atomic_writer(out, "wb") as f:
            pq.write_table(table, f)
    else:
        with atomic_writer(out, "w") as f:
            for r in rows:
                f.write(json_line(r) + "\n")
    return out
