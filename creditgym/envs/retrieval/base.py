"""The retrieval contract shared by every backend, and the wiki-18 corpus format.

A backend answers a batch of queries at once: ``search(queries, k) -> list[list[Hit]]``, one
ranked list of at most ``k`` hits per query, best first. Batching is part of the contract because
every consumer (many environments stepping at once, the HTTP server coalescing requests) has
several queries in hand, and every backend is much faster per query on a batch.

Every backend answers any query string without an exception: queries go through the one shared
normalisation, :func:`creditgym.envs.retrieval.query_text.normalize_queries` (lone surrogates
replaced; a non-string is a ``TypeError``), and a query with no searchable word gets ``[]``.
Callers that batch for others (``BatchingRetriever``, the server's ``Batcher``) normalise before
batching and retry a failed batch caller by caller, so one bad query fails only its own caller.

Corpus files are wiki-18 JSONL, the format of Search-R1 and FlashRAG: one object per line,
``{"id": "...", "contents": "\\"Title\\"\\nbody text"}``: the title, in double quotes, on the first
line of ``contents``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

from creditgym.envs.jsonl import iter_jsonl_rows
from creditgym.errors import CorpusFormatError


@dataclass(frozen=True)
class Hit:
    """One retrieved passage."""

    docid: str
    """The document's ``id`` in the corpus."""
    title: str
    """The title (first line of ``contents``, without its quotes)."""
    text: str
    """The body (``contents`` after the title line)."""
    score: float
    """The backend's relevance score; higher is better. Scales differ between backends."""

    @property
    def contents(self) -> str:
        """The wiki-18 ``contents`` string this hit came from."""
        return format_contents(self.title, self.text)


@runtime_checkable
class Retriever(Protocol):
    """What every retrieval backend provides."""

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Top-``k`` hits for each query, in the order of ``queries``."""
        ...

    def close(self) -> None:
        """Release files, threads or connections; the retriever is unusable afterwards."""
        ...


def format_contents(title: str, text: str) -> str:
    """wiki-18 ``contents``: the quoted title, a newline, then the body."""
    return f'"{title}"\n{text}'


def parse_contents(contents: str) -> tuple[str, str]:
    """Split wiki-18 ``contents`` into (title, body); a missing title line gives an empty title."""
    first, sep, rest = contents.partition("\n")
    if sep and len(first) >= 2 and first.startswith('"') and first.endswith('"'):
        return first[1:-1], rest
    return "", contents


def iter_corpus(path: str | Path) -> Iterator[tuple[str, str]]:
    """Yield ``(id, contents)`` from a wiki-18 JSONL file, with errors that name the line."""
    path = Path(path)
    if not path.is_file():
        raise CorpusFormatError(f"corpus file {path} does not exist")
    with path.open(encoding="utf-8") as f:
        for lineno, row in iter_jsonl_rows(f, path, CorpusFormatError):
            if not isinstance(row, dict) or "id" not in row or "contents" not in row:
                raise CorpusFormatError(
                    f"{path}:{lineno}: each line needs the keys 'id' and 'contents' "
                    '(wiki-18 form: {"id": "1", "contents": "\\"Title\\"\\nbody"})'
                )
            yield str(row["id"]), str(row["contents"])
