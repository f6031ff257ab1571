"""`creditgym train` reproduces, commits iterations with their checkpoint, and checks its config.

- Two identical runs write the same ``rollouts.jsonl`` (records equal but for ``created``).
- A run that dies after an iteration's records were written but before its checkpoint and
  metrics row (an exception injected into the real ``_checkpoint``), then ``--resume``: every
  iteration's ids appear once, equal to the uninterrupted run's, with iteration and advantages.
- Bad configs: exit 2 with a message, nothing created.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import creditgym.trainers.loop as loop
from creditgym.cli import main
from tests.trainers.helpers import SMALL, rows, start_from

pytestmark = pytest.mark.slow  # end-to-end runs or subprocesses: scheduled first

# gigpo's invalid-turn penalty gives non-zero advantages even when no trajectory is rewarded
BASE = ["train", "--config", "configs/default.yaml", *SMALL, "--set", "eval.episodes=2",
        "--set", "rl.iterations=2", "--set", "credit.name=gigpo",
        "--set", "credit.invalid_penalty=0.1"]


@pytest.fixture(scope="module")
def base(warm_model) -> list[str]:
    """``BASE`` from the session's warm start (what these tests check comes after it)."""
    return [*BASE, *start_from(warm_model)]


def records(run: Path) -> list[dict]:
    out = []
    for line in (run / "rollouts.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("created")  # wall-clock time of the record: the one field that may differ
        out.append(record)
    return out


class Killed(Exception):
    """Stands in for kill -9 between an iteration's records and its checkpoint/metrics row."""


@pytest.fixture(scope="module")
def reference(tmp_path_factory, base) -> Path:
    run = tmp_path_factory.mktemp("ref") / "run"
    assert main([*base, "--set", f"run_dir={run}"]) == 0
    return run


def test_identical_runs_write_identical_rollouts(reference, base, tmp_path):
    run = tmp_path / "again"
    assert main([*base, "--set", f"run_dir={run}"]) == 0
    want, got = records(reference), records(run)
    assert len(want) == 2 * 6 and got == want
    for name in ("eval-before.jsonl", "eval-after.jsonl"):
        strip = [{k: v for k, v in json.loads(x).items() if k != "created"}
                 for x in (run / name).read_text().splitlines()]
        ref = [{k: v for k, v in json.loads(x).items() if k != "created"}
               for x in (reference / name).read_text().splitlines()]
        assert strip == ref
    # each record says what it was trained with: its iteration and the update's advantages
    for r in want:
        assert r["iteration"] == int(r["group"][2:6])
        assert r["advantages"] is not None and len(r["advantages"]) == (
            len(r["prompt_ids"]) + sum(map(len, r["action_ids"])) + sum(map(len, r["observation_ids"])))
    assert any(any(a != 0 for a in r["advantages"]) for r in want)


def test_crash_between_records_and_checkpoint_then_resume(reference, base, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = loop.Trainer._checkpoint

    def dies_before_checkpoint_2(self, ckpt_dir, iteration):
        if iteration == 2:
            raise Killed("after iteration 1's records, before its checkpoint and metrics row")
        return real(self, ckpt_dir, iteration)

    monkeypatch.setattr(loop.Trainer, "_checkpoint", dies_before_checkpoint_2)
    with pytest.raises(Killed):
        main([*base, "--set", f"run_dir={run}"])
    monkeypatch.setattr(loop.Trainer, "_checkpoint", real)
    # the dead run left iteration 1's records on disk, but no metrics row for it
    assert [r["iteration"] for r in records(run)].count(1) == 6
    assert [r["iteration"] for r in rows(run)] == [0]
    assert main([*base, "--set", f"run_dir={run}", "--resume"]) == 0
    got = records(run)
    ids = [r["id"] for r in got]
    assert len(ids) == len(set(ids)) == 12  # every iteration exactly once
    assert got == records(reference)  # and what the uninterrupted run wrote
    assert [r["iteration"] for r in rows(run)] == [0, 1]


def _fails_cleanly(capsys, run: Path, *args: str) -> str:
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("creditgym train: error:")
    assert not run.exists()  # no run folder, so no base model, checkpoint or config copy
    return err


def test_bad_values_are_all_reported_before_anything_is_made(tmp_path, capsys):
    run = tmp_path / "run"
    err = _fails_cleanly(capsys, run, "--config", "configs/default.yaml", "--set", f"run_dir={run}",
                         "--set", "rl.iterations=-5", "--set", "credit=nosuch",
                         "--set", "env.kwargs.top_kk=3")
    assert "rl.iterations=-5: must be >= 1" in err
    assert "unknown estimator 'nosuch'" in err and "gigpo" in err
    assert "top_kk" in err and "top_k" in err  # env options are checked by the environment
    err = _fails_cleanly(capsys, run, "--config", "configs/default.yaml", "--set", f"run_dir={run}",
                         "--set", "credit=nosuch")
    assert "unknown estimator 'nosuch'" in err


def test_invalid_yaml_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"run_dir: {tmp_path / 'run'}\nrl:\n  iterations: 2\n   group_size: [3\n")
    err = _fails_cleanly(capsys, tmp_path / "run", "--config", str(bad))
    assert f"{bad}:4:" in err and "invalid YAML" in err


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_unwritable_run_dir_is_refused(tmp_path, capsys, where):
    if where == "under_a_file":
        (tmp_path / "file").write_text("x")
        run = tmp_path / "file" / "run"
    else:  # no one, root included, can make folders in /proc
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc here")
        run = Path("/proc/creditgym-test-run")
    err = _fails_cleanly(capsys, run, "--config", "configs/default.yaml", *SMALL,
                         "--set", f"run_dir={run}")
    assert "run_dir=" in err and "--set run_dir=DIR" in err
