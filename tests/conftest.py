"""Test-session settings: offline model hubs and a private cache for generated worlds/indexes."""

from __future__ import annotations

import os

import pytest

# The session's tiny local model, for tests outside tests/agents too (e.g. tests/test_eval_cli.py).
from tests.agents.conftest import tiny_model_dir  # noqa: F401  (a pytest fixture)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OPENAI_API_KEY", "dummy")
# Tiny models' operations are too small to split across threads; on a busy 2-core machine the
# second thread only spins (50x slower generation seen). One thread per test process.
os.environ.setdefault("OMP_NUM_THREADS", "1")


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
