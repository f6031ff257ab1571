"""Test-session settings: offline model hubs and a private cache for generated worlds/indexes."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OPENAI_API_KEY", "dummy")


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Worlds and indexes built by tests go to a temporary cache, never the user's."""
    old = os.environ.get("CREDITGYM_CACHE")
    os.environ["CREDITGYM_CACHE"] = str(tmp_path_factory.mktemp("creditgym-cache"))
    yield
    if old is None:
        os.environ.pop("CREDITGYM_CACHE", None)
    else:
        os.environ["CREDITGYM_CACHE"] = old
