"""Reading JSON Lines with errors that name the file and line (corpora and task files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator


def iter_jsonl_rows(
    lines: Iterable[str], path: str | Path, error: type[Exception]
) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed row)`` for every non-blank line; ``error`` names a bad line."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
