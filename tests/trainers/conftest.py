"""Session fixtures of the trainer tests: one real tiny run whose warm start the other
end-to-end runs share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trainers.helpers import SMALL


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """The run folder of one real two-iteration ``SMALL`` run from scratch (a tiny model and
    tokenizer fitted to its worlds, the warm start, RL, evaluations), made once per test session;
    ``test_two_iteration_run_writes_everything`` checks what it wrote."""
    from creditgym.cli import main

    run = tmp_path_factory.mktemp("small-run") / "run"
    assert main(["train", "--config", "configs/default.yaml", "--set", f"run_dir={run}",
                 "--set", "rl.iterations=2", *SMALL]) == 0
    return run


@pytest.fixture(scope="session")
def warm_model(small_run) -> Path:
    """``small_run``'s warm-started model (``sft-model/``): the runs that test what follows a warm
    start start from it with ``start_from`` instead of repeating it; tests of the warm start
    itself keep their own."""
    return small_run / "sft-model"
