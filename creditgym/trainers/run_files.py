"""Run-folder bookkeeping of ``creditgym train``: dropping uncommitted iterations on resume, the
metrics history, the log line of a summary."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from creditgym.files import atomic_write_text, atomic_writer
from creditgym.replay.io import meta_path


def drop_uncommitted(run_dir: Path, start: int, log: Callable[[str], None]) -> None:
    """Remove what iterations ``>= start`` wrote (the checkpoint resumed from does not include
    them and they are about to be redone): their ``rollouts.jsonl`` records, a torn last
    line, and their ``eval-itN.jsonl`` files (N > start)."""
    path = run_dir / "rollouts.jsonl"
    if path.exists():
        lines = path.read_bytes().splitlines(keepends=True)
        kept = [x for x in lines if x.endswith(b"\n")
                and (n := record_iteration(x)) is not None and n < start]
        if len(kept) < len(lines):
            with atomic_writer(path, "wb") as f:
                f.writelines(kept)
            log(f"dropped {len(lines) - len(kept)} record(s) of iterations >= {start} "
                f"from {path} (not in the checkpoint; redone now)")
    for eval_path in run_dir.glob("eval-it*.jsonl"):
        match = re.fullmatch(r"eval-it(\d+)\.jsonl", eval_path.name)
        if match and int(match.group(1)) > start:
            eval_path.unlink()
            meta_path(eval_path).unlink(missing_ok=True)


def brief(summary: dict[str, float]) -> str:
    """A log line's worth of a summary: success first, then the environment's own metrics."""
    skip = {"trajectories", "errored", "generated_tokens", "truncated", "success"}
    rest = [k for k in summary if k not in skip and "/" not in k][:5]
    return ", ".join(f"{k} {summary[k]:.3f}" for k in ["success", *rest])


def record_iteration(line: bytes) -> int | None:
    """The training iteration of one ``rollouts.jsonl`` line (records written before the
    ``iteration`` field: from the ``itNNNN/`` group prefix); None for a torn or foreign line."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("iteration"), int):
        return record["iteration"]
    match = re.match(r"it(\d+)/", str(record.get("group", "")))
    return int(match.group(1)) if match else None


def write_history(run_dir: Path, history: list[dict], evals: dict) -> None:
    """``metrics.jsonl`` and ``evals.json``, rewritten whole (temp + rename) from the
    checkpointed history, so a resumed run never shows rows of an iteration lost with a kill."""
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    atomic_write_text(run_dir / "evals.json", json.dumps(evals, indent=2) + "\n")
