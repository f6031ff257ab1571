"""Readable terminal views of trajectories (rich): a summary table of a file, and per trajectory
its task, then per turn the action, tool calls, observation (shortened), reward, valid flag and
metrics, the advantages of the turn's tokens when present, and the outcome metrics.

Any string prints: a lone surrogate in a record shows as U+FFFD, and ``SafeTextStream`` turns
what the terminal's encoding cannot hold into ``\\u`` escapes instead of raising.
``show_file`` streams a file in two passes (summary table in chunks of ``SUMMARY_CHUNK`` rows,
then the full views), holding one record at a time, so memory does not grow with the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from creditgym.files import replace_surrogates, scrub_surrogates
from creditgym.trajectory import Trajectory

SUMMARY_CHUNK = 500
"""Rows per printed summary table: a file's table is printed in pieces of this many rows."""
MAX_ERROR_CHARS = 300
"""Longest error text in the summary table."""


class SafeTextStream:
    """A text stream whose ``write`` never raises ``UnicodeEncodeError``: characters the
    underlying stream's encoding cannot hold are written as backslash escapes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(self._stream, "encoding", None) or "utf-8"
            return self._stream.write(
                text.encode(encoding, "backslashreplace").decode(encoding, "replace")
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, keeping its start and end."""
    if limit <= 0 or len(text) <= limit:
        return text
    head = max(limit * 2 // 3, 1)
    tail = max(limit - head, 0)
    cut = len(text) - head - tail
    return text[:head] + f"\n[... {cut} characters ...]\n" + (text[-tail:] if tail else "")


def turn_advantages(t: Trajectory) -> list[np.ndarray] | None:
    """Per turn: the advantages of its action tokens (None when the record has none or they do
    not line up with ``tokens()``)."""
    if t.advantages is None or len(t.advantages) != len(t.tokens()):
        return None
    adv = np.asarray(t.advantages, dtype=np.float64)
    owner = t.turn_of_token()
    mask = t.loss_mask().astype(bool)
    return [adv[(owner == k) & mask] for k in range(t.n_turns)]


def _number(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _metrics_text(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_number(v)}" for k, v in metrics.items())


def summary_row(t: Trajectory) -> tuple[str, ...]:
    """The summary-table cells of ``t`` (short, printable strings)."""
    end = "terminated" if t.terminated else "truncated" if t.truncated else ""
    ok = t.success
    cells = (
        t.id,
        t.group,
        str(t.task.get("id", "")),
        str(t.n_turns),
        f"{t.episode_return:.4g}",
        "" if ok is None else ("yes" if ok else "no"),
        end,
        shorten(t.error or "", MAX_ERROR_CHARS),
    )
    return tuple(replace_surrogates(c) for c in cells)


def summary_table(
    trajectories: Iterable[Trajectory | tuple[str, ...]], title: str = ""
) -> Table:
    """One row per trajectory (or ``summary_row``): id, group, task, turns, return, success,
    end, error."""
    table = Table(title=Text(title) if title else None, show_lines=False)
    for col in ("id", "group", "task", "turns", "return", "success", "end", "error"):
        table.add_column(
            col,
            no_wrap=col != "error",
            overflow="fold" if col == "error" else "ellipsis",
            justify="right" if col in ("turns", "return") else "left",
        )
    for t in trajectories:
        table.add_row(*(t if isinstance(t, tuple) else summary_row(t)))
    return table


def trajectory_view(t: Trajectory, *, max_observation_chars: int = 600) -> Panel:
    """A panel with the whole episode (lone surrogates shown as U+FFFD)."""
    t = Trajectory.from_dict(scrub_surrogates(t.to_dict()))
    head = Table.grid(padding=(0, 1))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("question", Text(str(t.task.get("question", ""))))
    head.add_row("gold", Text(", ".join(map(str, t.task.get("golden_answers", [])))))
    head.add_row("env", Text(f"{t.env_id or '?'} {t.env_kwargs or ''} seed={t.seed}"))
    head.add_row("tokens", Text(f"prompt {len(t.prompt_ids)}, total {len(t.tokens())}"))
    if t.error:
        head.add_row("error", Text(t.error, style="bold red"))
    parts: list[Any] = [head]
    advs = turn_advantages(t)
    for k in range(t.n_turns):
        turn = Table.grid(padding=(0, 1))
        turn.add_column(style="cyan", no_wrap=True)
        turn.add_column()
        action = (
            t.actions[k] if t.actions else f"<{len(t.action_ids[k])} token ids, text not recorded>"
        )
        turn.add_row("action", Text(action, style="green"))
        if t.tool_calls and t.tool_calls[k]:
            calls = "; ".join(
                f"{c.get('name')}({_args(c.get('arguments'))})"
                + ("" if c.get("ok", True) else f" failed: {c.get('error')}")
                for c in t.tool_calls[k]
            )
            turn.add_row("tools", Text(calls))
        if t.observations and t.observations[k].strip():
            turn.add_row(
                "observation", Text(shorten(t.observations[k], max_observation_chars), style="dim")
            )
        flags = f"reward {t.rewards[k]:.4g}   valid {'yes' if t.valid[k] else 'NO'}"
        if t.finish_reasons:
            flags += f"   finish {t.finish_reasons[k]}"
        turn.add_row("", Text(flags, style="bold" if t.valid[k] else "bold red"))
        if t.turn_metrics:
            turn.add_row("metrics", Text(_metrics_text(t.turn_metrics[k]), style="dim"))
        if advs is not None and advs[k].size:
            a = advs[k]
            turn.add_row(
                "advantage",
                Text(
                    f"mean {a.mean():+.4g}  min {a.min():+.4g}  max {a.max():+.4g}  ({a.size} tokens)",
                    style="green" if a.mean() > 0 else "red" if a.mean() < 0 else "",
                ),
            )
        parts.append(Panel(turn, title=Text(f"turn {k}"), title_align="left", border_style="blue"))
    end = "terminated" if t.terminated else "truncated" if t.truncated else "not ended"
    parts.append(Text(f"return {t.episode_return:.4g}  ({end})", style="bold"))
    if t.metrics:
        parts.append(Text("metrics: " + _metrics_text(t.metrics)))
    return Panel(Group(*parts), title=Text(f"{t.id}  (group {t.group})"), title_align="left")


def _args(arguments: Any) -> str:
    if isinstance(arguments, dict):
        return ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    return "" if arguments is None else repr(arguments)


def show(
    trajectories: Sequence[Trajectory],
    *,
    console: Console | None = None,
    details: Sequence[Trajectory] | None = None,
    max_observation_chars: int = 600,
    title: str = "",
) -> None:
    """Print the summary table of ``trajectories`` and the full view of each of ``details``."""
    console = console or Console()
    if len(trajectories) > 1:
        console.print(summary_table(trajectories, title))
    for t in details if details is not None else trajectories:
        console.print(trajectory_view(t, max_observation_chars=max_observation_chars))


def show_file(
    path: str | Path,
    records: Any,
    *,
    console: Console,
    ids: Sequence[str] | None = None,
    all_details: bool = False,
    first: int = 1,
    max_observation_chars: int = 600,
) -> int:
    """Print the summary of trajectory file ``path`` and full views, streaming; returns the
    number of trajectories shown in the summary.

    ``records()`` returns a fresh iterator of the file's trajectories (it is called twice).
    With ``ids`` only those trajectories (in file order), else every one in the summary and in
    full the first ``first`` (or all with ``all_details``).
    """
    wanted = set(ids or ())
    rows: list[tuple[str, ...]] = []
    count, printed = 0, False
    for t in records():
        if wanted and t.id not in wanted:
            continue
        count += 1
        rows.append(summary_row(t))
        if len(rows) >= SUMMARY_CHUNK:
            console.print(summary_table(rows))
            rows.clear()
            printed = True
    if rows and (printed or count > 1):
        console.print(summary_table(rows))
    console.print(Text(replace_surrogates(f"{path}: {count} trajectories")))
    shown = 0
    for t in records():
        if wanted and t.id not in wanted:
            continue
        if not (wanted or all_details) and shown >= first:
            break
        console.print(trajectory_view(t, max_observation_chars=max_observation_chars))
        shown += 1
    return count
