"""Tasks from Search-R1-format question files (parquet or JSONL).

Two layouts are read, row by row, into ``Task`` objects:

- Search-R1 training parquet (``data/nq_search/train.parquet``): ``question`` (may be absent),
  ``prompt`` (chat messages; the user message holds the whole instruction ending in
  ``Question: ...``), ``data_source``, ``reward_model.ground_truth.target`` (a list, numpy array
  or string) and ``extra_info`` (``{"split", "index"}``).
- FlashRAG/Search-R1 evaluation JSONL (``nq/test.jsonl``): ``id``, ``question``,
  ``golden_answers`` and optionally ``metadata``.

The question is ``question`` when present, else the text after the last ``Question:`` in the
user message of ``prompt`` (the whole message when it has no such marker; it is kept in
``metadata["prompt"]`` either way). Gold answers are ``golden_answers``, else
``reward_model.ground_truth.target``. The task id is ``id``, else ``<split>-<extra_info.index>``,
else ``<file stem>-<row>``. Every problem is a ``TaskFormatError`` naming the file and row.

The wiki-18 corpus these questions are searched against is read by
``creditgym.envs.retrieval.base.iter_corpus``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from creditgym.envs.jsonl import iter_jsonl_rows
from creditgym.envs.task import Task
from creditgym.errors import TaskFormatError

_SPLIT_NAMES = {"train", "dev", "test", "val", "valid", "validation"}


def load_searchr1_tasks(
    path: str | Path,
    *,
    split: str | None = None,
    limit: int | None = None,
    data_source: str | None = None,
) -> list[Task]:
    """Read tasks from a Search-R1 parquet or JSONL file, or from a directory of split files.

    ``path`` may be a ``.parquet``, ``.jsonl``/``.json`` file, or a directory holding
    ``<split>.parquet`` or ``<split>.jsonl`` (then ``split`` is required). With a file and a
    ``split``, only rows whose ``extra_info.split`` (or ``split``) equals it are kept (rows that
    do not say are kept). ``limit`` keeps the first that many tasks. ``data_source`` overrides
    the rows' own (default: the row's ``data_source``, else the name of the folder of a split
    file such as ``nq/test.jsonl``, else the file stem).
    """
    path = Path(path)
    if limit is not None and limit < 0:
        raise TaskFormatError(f"limit must be >= 0, got {limit}")
    if path.is_dir():
        if split is None:
            raise TaskFormatError(
                f"{path} is a directory; pass split=... to pick <split>.parquet or <split>.jsonl"
            )
        candidates = [path / f"{split}{ext}" for ext in (".parquet", ".jsonl", ".json")]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise TaskFormatError(
                f"{path} has no {split}.parquet or {split}.jsonl; "
                f"it holds: {', '.join(sorted(p.name for p in path.iterdir())) or 'nothing'}"
            )
        path, filter_split = found[0], None
    else:
        filter_split = split
    if not path.is_file():
        raise TaskFormatError(f"task file {path} does not exist")
    default_source = data_source or (
        path.parent.name if path.stem.lower() in _SPLIT_NAMES and path.parent.name else path.stem
    )
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        rows = _parquet_rows(path)
    elif suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(path)
    else:
        raise TaskFormatError(f"{path}: unknown task file type {suffix!r}; use .parquet or .jsonl")

    tasks: list[Task] = []
    seen: set[str] = set()
    for where, row in rows:
        if limit is not None and len(tasks) >= limit:
            break
        if not isinstance(row, dict):
            raise TaskFormatError(f"{where}: a row must be an object, got {type(row).__name__}")
        row = _plain(row)
        extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
        row_split = extra.get("split", row.get("split"))
        if filter_split is not None and row_split is not None and row_split != filter_split:
            continue
        task = _row_to_task(row, where, extra, default_source, data_source, path.stem)
        if task.id in seen:
            raise TaskFormatError(f"{where}: task id {task.id!r} appears twice in {path}")
        seen.add(task.id)
        tasks.append(task)
    return tasks


def _row_to_task(
    row: dict[str, Any],
    where: str,
    extra: dict[str, Any],
    default_source: str,
    source_override: str | None,
    stem: str,
) -> Task:
    metadata: dict[str, Any] = {}
    prompt_text = _user_message(row.get("prompt"), where)
    question = row.get("question")
    if isinstance(question, str) and question.strip():
        question = question.strip()
    elif prompt_text is not None:
        marker = prompt_text.rfind("Question:")
        question = prompt_text[marker + len("Question:"):].strip() if marker != -1 else prompt_text.strip()
    else:
        raise TaskFormatError(
            f"{where}: no question: the row needs a 'question' string or a 'prompt' list of chat "
            "messages with a user message"
        )
    if not question:
        raise TaskFormatError(f"{where}: the question is empty")
    if prompt_text is not None:
        metadata["prompt"] = prompt_text

    golds = row.get("golden_answers")
    if golds is None:
        reward_model = row.get("reward_model")
        ground_truth = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
        golds = ground_truth.get("target") if isinstance(ground_truth, dict) else None
    if golds is None:
        raise TaskFormatError(
            f"{where}: no gold answers: the row needs 'golden_answers' or "
            "'reward_model.ground_truth.target'"
        )
    if isinstance(golds, (str, int, float)) and not isinstance(golds, bool):
        golds = [golds]
    if not isinstance(golds, list) or not golds:
        raise TaskFormatError(f"{where}: gold answers must be a non-empty list of strings, got {golds!r}")
    golds = [str(g) for g in golds if g is not None and str(g).strip()]
    if not golds:
        raise TaskFormatError(f"{where}: every gold answer is empty")

    if row.get("id") is not None and str(row["id"]).strip():
        task_id = str(row["id"])
    elif extra.get("index") is not None:
        task_id = f"{extra.get('split', stem)}-{extra['index']}"
    else:
        task_id = f"{stem}-{where.rsplit(' ', 1)[-1]}"

    if extra:
        metadata["extra_info"] = extra
    if isinstance(row.get("metadata"), dict):
        metadata.update(row["metadata"])
    if extra.get("split", row.get("split")) is not None:
        metadata["split"] = extra.get("split", row.get("split"))
    source = source_override or row.get("data_source") or default_source
    return Task(
        id=task_id,
        question=question,
        golden_answers=tuple(golds),
        data_source=str(source),
        metadata=metadata,
    )


def _user_message(prompt: Any, where: str) -> str | None:
    if prompt is None:
        return None
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, dict):
        prompt = [prompt]
    if not isinstance(prompt, list):
        raise TaskFormatError(f"{where}: 'prompt' must be a list of chat messages, got {type(prompt).__name__}")
    for message in prompt:
        if isinstance(message, dict) and message.get("role", "user") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
    raise TaskFormatError(f"{where}: 'prompt' has no user message with text content")


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is a test/runtime dependency
        raise TaskFormatError(
            f"reading {path} needs pyarrow; install it with `pip install pyarrow`"
        ) from exc
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise TaskFormatError(f"{path}: not a readable parquet file ({exc})") from exc
    row_number = 0
    for batch in table.to_batches(max_chunksize=4096):
        for row in batch.to_pylist():
            yield f"{path} row {row_number}", row
            row_number += 1


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        first = f.read(1)
        while first and first.isspace():
            first = f.read(1)
        f.seek(0)
        if first == "[":  # a .json file holding one array of rows
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise TaskFormatError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
            for i, row in enumerate(data):
                yield f"{path} row {i}", row
            return
        for lineno, row in iter_jsonl_rows(f, path, TaskFormatError):
            yield f"{path}:{lineno} row {lineno - 1}", row


def _plain(value: Any) -> Any:
    """Plain JSON-ready Python values: numpy arrays/scalars -> lists/numbers, NaN -> None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    tolist = getattr(value, "tolist", None)
    if tolist is not None and not isinstance(value, (str, bytes)):
        return _plain(tolist())
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
