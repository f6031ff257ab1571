"""``World``: a generated encyclopedia (corpus) and its question splits.

Generation builds only the numpy entity graph (:mod:`entities`); document strings are rendered
on demand, so streaming a 1,000,000-document corpus to disk never holds it in memory.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from creditgym.envs.retrieval.base import format_contents
from creditgym.envs.task import Task
from creditgym.envs.world.config import WorldConfig
from creditgym.envs.world.documents import render_body
from creditgym.envs.world.entities import KINDS, EntityGraph, build_graph
from creditgym.envs.world.questions import SPLITS, make_questions
from creditgym.errors import ConfigError
from creditgym.files import atomic_writer


class World:
    """A procedural world: documents ``"0" .. str(N-1)`` and ``train``/``test`` questions."""

    def __init__(self, config: WorldConfig, graph: EntityGraph) -> None:
        self.config = config
        """The configuration this world was generated from."""
        self.graph = graph
        """The entity graph (numpy arrays); see :mod:`creditgym.envs.world.entities`."""
        self._questions: dict[str, list[Task]] = {}
        self._contents: list[str] | None = None

    @classmethod
    def generate(cls, config: WorldConfig | None = None) -> World:
        """Generate the world described by ``config`` (the default world if None).

        Worlds of up to ``MEMO_DOCUMENTS`` documents are generated once per process and shared
        (a world is never modified after generation; every environment of a run, and each of
        the demonstration worlds, would otherwise rebuild its graph and questions)."""
        config = config or WorldConfig()
        if cls is World and config.num_documents <= MEMO_DOCUMENTS:
            return _generate_memo(config)
        return cls(config, build_graph(config))

    # ---- documents ------------------------------------------------------------------------------
    @property
    def num_documents(self) -> int:
        """Number of documents (= entities)."""
        return self.graph.num_documents

    def __len__(self) -> int:
        return self.num_documents

    def _docid(self, docid: str | int) -> int:
        try:
            d = int(docid)
        except (TypeError, ValueError):
            raise KeyError(f"document id {docid!r} is not an integer string") from None
        if not 0 <= d < self.num_documents or (isinstance(docid, str) and docid != str(d)):
            raise KeyError(f"no document {docid!r}; ids run from '0' to '{self.num_documents - 1}'")
        return d

    def title(self, docid: str | int) -> str:
        """Title of a document (its entity's unique name)."""
        return self.graph.title(self._docid(docid))

    def kind(self, docid: str | int) -> str:
        """Kind of a document's entity (``person``, ``city``, ...)."""
        return KINDS[int(self.graph.doc_kind[self._docid(docid)])]

    def document(self, docid: str | int) -> dict[str, str]:
        """One document in wiki-18 form: ``{"id": "17", "contents": "\\"Title\\"\\nbody"}``."""
        d = self._docid(docid)
        return {
            "id": str(d),
            "contents": format_contents(self.graph.title(d), render_body(self.graph, d)),
        }

    def iter_documents(self, start: int = 0, stop: int | None = None) -> Iterator[dict[str, str]]:
        """Documents ``start .. stop-1`` in id order, rendered one at a time."""
        g = self.graph
        stop = self.num_documents if stop is None else min(stop, self.num_documents)
        for d in range(start, stop):
            yield {"id": str(d), "contents": format_contents(g.title(d), render_body(g, d))}

    def contents(self) -> list[str]:
        """Every document's ``contents`` (title line and body) in id order; rendered once for
        worlds of up to ``MEMO_DOCUMENTS`` documents (a tokenizer's corpus, read every run)."""
        if self._contents is not None:
            return list(self._contents)
        texts = [doc["contents"] for doc in self.iter_documents()]
        if self.num_documents <= MEMO_DOCUMENTS:
            self._contents = texts
            return list(texts)
        return texts

    def write_corpus(self, path: str | Path, *, progress: bool | None = None) -> Path:
        """Write the corpus as wiki-18 JSONL, atomically (a temp file renamed into place).

        ``progress``: show a tqdm bar (default: for worlds of 100,000 documents or more).
        Returns the path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if progress is None:
            progress = self.num_documents >= 100_000
        bar = _progress(self.num_documents, progress, f"writing {path.name}")
        try:
            with atomic_writer(path) as f:
                lines: list[str] = []
                for doc in self.iter_documents():
                    lines.append(json.dumps(doc, ensure_ascii=False))
                    if len(lines) == 4096:
                        f.write("\n".join(lines) + "\n")
                        bar.update(len(lines))
                        lines.clear()
                if lines:
                    f.write("\n".join(lines) + "\n")
                    bar.update(len(lines))
        finally:
            bar.close()
        return path

    def corpus_sha256(self) -> str:
        """SHA-256 of the corpus as :meth:`write_corpus` writes it (without writing it)."""
        h = hashlib.sha256()
        for doc in self.iter_documents():
            h.update((json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8"))
        return h.hexdigest()

    # ---- questions ------------------------------------------------------------------------------
    def questions(self, split: str = "train") -> list[Task]:
        """The questions of ``split`` (``"train"`` or ``"test"``), built once and cached."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; choose 'train' or 'test'")
        if split not in self._questions:
            self._questions[split] = make_questions(self.graph, self.config, split)
        return list(self._questions[split])

    def __repr__(self) -> str:
        c = self.config
        return f"World(seed={c.seed}, num_documents={self.num_documents})"


MEMO_DOCUMENTS = 20_000
"""Worlds up to this size are kept (at most 32 of them) by :meth:`World.generate`."""


@functools.lru_cache(maxsize=32)
def _generate_memo(config: WorldConfig) -> World:
    return World(config, build_graph(config))


def generate_world(config: WorldConfig | None = None) -> World:
    """Same as :meth:`World.generate`."""
    return World.generate(config)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a declared dependency; degrade quietly where it is missing
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="doc", unit_scale=True)
