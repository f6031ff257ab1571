"""The built-in default dataset: a generated world, its corpus file and its retrieval index.

Built on first use and cached (see ``creditgym.envs.cache``), so every command and test that
needs "the default world with a Lucene index" gets the same files without rebuilding them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from creditgym.envs import cache
from creditgym.envs.world import World, WorldConfig


@dataclass
class BuiltWorld:
    """A generated world with its corpus file and index on disk."""

    world: World
    """The generator's output (documents and questions)."""
    corpus: Path
    """The world's wiki-18 JSONL corpus."""
    index: Path
    """The retrieval index built from ``corpus``."""
    backend: str
    """Which backend ``index`` is for (``lucene``, ``bm25s`` or ``dense``)."""


def _build_once(path: Path, build: Callable[[], object]) -> None:
    """``build()`` unless ``path`` exists, under a lock file beside it: concurrent processes
    sharing the cache (the ranks of one job, two runs) build it once, and none replaces it while
    another reads it. The builders write atomically, so a killed build leaves no ``path``."""
    if path.exists():
        return
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if not path.exists():
            build()


def ensure_world_corpus(config: WorldConfig) -> tuple[World, Path]:
    """Generate the world and write its corpus unless the cache already holds it."""
    world = World.generate(config)
    path = cache.corpus_path(cache.world_name(config))
    _build_once(path, lambda: world.write_corpus(path))
    return world, path


def ensure_world_index(config: WorldConfig, backend: str = "lucene", *, threads: int = 2) -> BuiltWorld:
    """The world, its corpus and a ``backend`` index over it, building what is missing."""
    from creditgym.envs.retrieval import build_index

    world, corpus = ensure_world_corpus(config)
    index = cache.index_path(cache.world_name(config), backend)
    # No stemming: the world's names are invented words, and English suffix stripping makes
    # distinct names collide ("Breigos" and the surname "Breigo" both stem to "breigo").
    _build_once(index, lambda: build_index(backend, corpus, index, threads=threads,
                                           stemmer="none", stem=False))
    return BuiltWorld(world=world, corpus=corpus, index=index, backend=backend)
