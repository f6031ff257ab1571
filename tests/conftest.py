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
    """Worlds and indexes built by tests go to a temporary cache, never the user's; the xdist
    workers of one run share it (its builds are locked, so each world is built once)."""
    old = os.environ.get("CREDITGYM_CACHE")
    if "PYTEST_XDIST_WORKER" not in os.environ:  # not under xdist (or with -p no:xdist)
        os.environ["CREDITGYM_CACHE"] = str(tmp_path_factory.mktemp("creditgym-cache"))
    else:
        shared = tmp_path_factory.getbasetemp().parent / "creditgym-cache"
        shared.mkdir(exist_ok=True)
        os.environ["CREDITGYM_CACHE"] = str(shared)
    yield
    if old is None:
        os.environ.pop("CREDITGYM_CACHE", None)
    else:
        os.environ["CREDITGYM_CACHE"] = old


def pytest_collection_modifyitems(config, items):
    """Files of ``slow`` tests first: xdist hands out whole files (``--dist loadfile``) in this
    order, and a slow file handed out last would keep one worker busy alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
