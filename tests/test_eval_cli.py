"""``creditgym eval`` end to end with the tiny model, then the ``replay`` tools on its output.

The command rolls the tiny local model out on SearchEnv (bm25s world index) and writes the
trajectory file, its metadata and its summary; ``replay verify`` re-steps every record through a
fresh environment, ``show`` and ``export`` read it, and a copy torn mid-line (a killed writer)
still loads and verifies up to its last complete line.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from creditgym.cli import main
from creditgym.replay import TornLineWarning, read_trajectories

ENV_KWARGS = {"split": "test", "world_backend": "bm25s", "max_turns": 3}


@pytest.fixture(scope="module")
def eval_run(tiny_model_dir, tmp_path_factory):
    """One `creditgym eval` run: 4 tasks x 2 trajectories; returns the trajectory file. Short
    actions and episodes (--max-new-tokens 24, max_turns=3) keep it quick."""
    out = tmp_path_factory.mktemp("eval") / "runs" / "X.jsonl"
    argv = ["eval", "--env", "creditgym/Search-v0", "--env-arg", "split=test",
            "--env-arg", 'world_backend="bm25s"', "--env-arg", "max_turns=3",
            "--model", str(tiny_model_dir), "--episodes", "4", "--group", "2",
            "--max-new-tokens", "24", "--max-context", "100000", "--out", str(out)]
    assert main(argv) == 0
    return out


def test_eval_writes_trajectories_metadata_and_summary(eval_run, capsys):
    trajs = read_trajectories(eval_run)
    assert len(trajs) == 8 and all(t.error is None for t in trajs)
    groups = [t.group for t in trajs]
    assert len(set(groups)) == 4 and all(groups.count(g) == 2 for g in groups)
    assert all(t.env_id == "creditgym/Search-v0" and t.env_kwargs == ENV_KWARGS for t in trajs)
    assert all(1 <= t.n_turns <= 3 and (t.terminated or t.truncated) for t in trajs)
    assert all(max(map(len, t.action_ids)) <= 24 for t in trajs)
    meta = json.loads(eval_run.with_name("X.jsonl.meta.json").read_text())
    assert meta["run"]["env_kwargs"] == ENV_KWARGS and meta["run"]["group"] == 2
    # --max-context above the model's own context is clamped to it (4096 for the tiny model)
    assert meta["run"]["rollout"]["max_context_tokens"] == 4096
    # generation stopped at the environment's own stop strings (its tools' closing tags)
    assert meta["run"]["rollout"]["sampling"]["stop"] == ["</search>", "</answer>"]
    summary = json.loads(eval_run.with_name("X.jsonl.summary.json").read_text())
    for key in ("success", "em", "f1", "turns", "searches", "generated_tokens"):
        assert isinstance(summary[key], float), key
    assert summary["trajectories"] == 8.0 and summary["errored"] == 0.0
    assert summary["turns"] == pytest.approx(sum(t.n_turns for t in trajs) / 8)
    assert summary["generated_tokens"] == pytest.approx(
        sum(sum(map(len, t.action_ids)) for t in trajs) / 8)
    assert 0.0 <= summary["em"] <= summary["f1"] <= 1.0


def test_no_system_prompt_rolls_out_as_a_run_trained_without_one(eval_run, tiny_model_dir,
                                                                   tmp_path):
    # a run trained with system_prompt: false never saw the instructions; evaluating it with
    # them gave 0 success where the trainer's own evaluation gave 0.141
    assert all(t.prompt_messages[0]["role"] == "system" for t in read_trajectories(eval_run))
    out = tmp_path / "plain.jsonl"
    argv = ["eval", "--env-arg", "split=test", "--env-arg", 'world_backend="bm25s"',
            "--env-arg", "max_turns=1", "--model", str(tiny_model_dir), "--episodes", "2",
            "--max-new-tokens", "8", "--out", str(out), "--no-system-prompt"]
    assert main(argv) == 0
    trajs = read_trajectories(out)
    assert len(trajs) == 2 and all([m["role"] for m in t.prompt_messages] == ["user"]
                                   for t in trajs)
    meta = json.loads(out.with_name("plain.jsonl.meta.json").read_text())
    assert meta["run"]["rollout"]["system_prompt"] is False


def test_replay_verify_show_and_export_work_on_the_eval_output(eval_run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["replay", "verify", str(eval_run)]) == 0
    assert "8/8 replayed trajectories match, 0 diverged, 0 skipped" in capsys.readouterr().out
    assert main(["replay", "show", str(eval_run)]) == 0
    shown = capsys.readouterr().out
    first = read_trajectories(eval_run)[0]
    assert "8 trajectories" in shown and first.task["question"][:30] in " ".join(shown.split())
    table = tmp_path / "t.parquet"
    assert main(["replay", "export", str(eval_run), "-o", str(table)]) == 0
    frame = pd.read_parquet(table)
    assert len(frame) == 8 and sorted(frame["id"]) == sorted(t.id for t in read_trajectories(eval_run))


def test_a_copy_torn_mid_line_loads_with_a_warning_and_still_verifies(eval_run, tmp_path, capsys):
    lines = eval_run.read_bytes().splitlines(keepends=True)
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # no closing newline
    shutil.copy(eval_run.with_name("X.jsonl.meta.json"), tmp_path / "torn.jsonl.meta.json")
    with pytest.warns(TornLineWarning, match=rf"torn\.jsonl: line {len(lines)} is torn"):
        kept = read_trajectories(torn)
    assert [t.id for t in kept] == [t.id for t in read_trajectories(eval_run)][:-1]
    capsys.readouterr()
    assert main(["replay", "verify", str(torn)]) == 0
    captured = capsys.readouterr()
    assert f"line {len(lines)} is torn" in captured.err
    n = len(lines) - 1
    assert f"{n}/{n} replayed trajectories match, 0 diverged, 0 skipped" in captured.out
