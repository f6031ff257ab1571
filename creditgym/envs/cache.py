"""Where derived artefacts live: generated corpora and retrieval indexes.

Everything here can be rebuilt, so it sits in a cache directory: ``$CREDITGYM_CACHE`` if set,
else ``~/.cache/creditgym``. Names encode what built them (world seed and size, backend), so two
configurations never share an index by accident.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root, created on first use."""
    root = Path(os.environ.get("CREDITGYM_CACHE") or Path.home() / ".cache" / "creditgym")
    root.mkdir(parents=True, exist_ok=True)
    return root


def world_name(config) -> str:
    """The cache name of a generated world: seed, size, and a digest of every other setting
    (two configurations that differ anywhere never share a corpus or an index)."""
    import dataclasses
    import hashlib
    import json

    digest = hashlib.sha1(
        json.dumps(dataclasses.asdict(config), sort_keys=True).encode()
    ).hexdigest()[:8]
    return f"world-s{config.seed}-n{config.num_documents}-{digest}"


def corpus_path(name: str) -> Path:
    """Path of the wiki-18 JSONL corpus called ``name``."""
    return cache_dir() / "corpora" / f"{name}.jsonl"


def index_path(name: str, backend: str) -> Path:
    """Path of the ``backend`` index built from the corpus called ``name``."""
    return cache_dir() / "indexes" / f"{name}.{backend}"
