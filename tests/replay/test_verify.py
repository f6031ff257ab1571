"""replay verify: genuine SearchEnv records replay exactly; edited records diverge (exit code 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from creditgym.replay.cli import main
from creditgym.replay.io import read_trajectories, write_trajectories
from creditgym.replay.verify import verify_trajectories

REPO = Path(__file__).resolve().parents[2]


def _edit(path: Path, line: int, edit) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=False)
    record = json.loads(lines[line])
    edit(record)
    lines[line] = json.dumps(record, ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_genuine_trajectories_replay_exactly(trajectories):
    assert verify_trajectories(trajectories) == []


def test_cli_verify_passes_on_a_genuine_file(traj_file, capsys):
    assert main(["replay", "verify", str(traj_file)]) == 0
    out = capsys.readouterr().out
    assert "12/12 replayed trajectories match, 0 diverged, 0 skipped" in out


def test_edited_observation_is_reported_with_its_turn(traj_file, capsys):
    # line 2 is g0-invalid: its turn 1 observation holds search results
    _edit(
        traj_file,
        2,
        lambda r: r["observations"].__setitem__(1, r["observations"][1].replace("Doc 2", "Doc 9")),
    )
    found = verify_trajectories(read_trajectories(traj_file))
    assert len(found) == 1
    d = found[0]
    assert (d.trajectory_id, d.turn, d.field, d.kind) == (
        "g0-invalid",
        1,
        "observation",
        "diverged",
    )
    assert "Doc 9" in d.recorded and "Doc 2" in d.replayed
    assert main(["replay", "verify", str(traj_file)]) == 1
    assert "g0-invalid: turn 1: observation differs" in capsys.readouterr().out


def test_edited_reward_diverges_and_the_exit_code_says_so(traj_file):
    _edit(traj_file, 0, lambda r: r["rewards"].__setitem__(-1, 0.5))
    (d,) = verify_trajectories(read_trajectories(traj_file))
    assert (d.trajectory_id, d.turn, d.field, d.recorded, d.replayed) == (
        "g0-expert",
        1,
        "reward",
        0.5,
        1.0,
    )
    # the real command line, in its own process
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "creditgym.replay.cli", "replay", "verify", str(traj_file)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 1, proc.stderr
    assert "g0-expert: turn 1: reward differs" in proc.stdout


def test_reward_within_tolerance_is_not_a_divergence(trajectories):
    trajectories[0].rewards[-1] += 1e-12
    assert verify_trajectories(trajectories[:1]) == []


def test_other_fields_and_episode_end(trajectories):
    a, b, c = trajectories[0], trajectories[2], trajectories[3]
    a.valid[0] = False
    b.anchors[1] = "some other state"
    del c.actions[-1], c.action_ids[-1], c.action_logprobs[-1], c.observation_ids[-1]
    del c.rewards[-1], c.anchors[-1], c.valid[-1], c.observations[-1], c.turn_metrics[-1]
    del c.tool_calls[-1], c.finish_reasons[-1]
    found = {d.trajectory_id: d for d in verify_trajectories([a, b, c])}
    assert found["g0-expert"].field == "valid"
    assert (found["g0-invalid"].field, found["g0-invalid"].turn) == ("anchor", 0)
    # c stopped recording one turn early but claims the env terminated: the replay did not end
    assert (found["g1-expert"].field, found["g1-expert"].turn) == ("terminated", c.n_turns - 1)


def test_rollout_side_truncation_is_not_a_divergence(trajectories):
    """A context-budget cut ends the record early with truncated=True: that replays fine."""
    c = trajectories[3]
    for name in (
        "actions",
        "action_ids",
        "action_logprobs",
        "observation_ids",
        "rewards",
        "anchors",
        "valid",
        "observations",
        "turn_metrics",
        "tool_calls",
        "finish_reasons",
    ):
        del getattr(c, name)[-1]
    c.terminated, c.truncated = False, True
    assert verify_trajectories([c]) == []


def test_failed_and_unreplayable_records_are_skipped(tmp_path, trajectories, capsys):
    a, b, c = trajectories[:3]
    a.error = "backend: connection refused"
    a.observations[0] = "garbage that would diverge"
    b.env_id = ""
    found = verify_trajectories([a, b, c])
    assert [(d.trajectory_id, d.kind, d.field) for d in found] == [
        ("g0-expert", "skipped", "error"),
        ("g0-wrong", "skipped", "env_id"),
    ]
    path = write_trajectories(tmp_path / "skips.jsonl", [a, b])
    assert main(["replay", "verify", str(path)]) == 1  # nothing could be verified
    assert "no trajectory could be replayed" in capsys.readouterr().err


def test_one_env_per_distinct_config(trajectories):
    made = []

    def make_env(env_id, kwargs):
        from creditgym.replay.verify import default_make_env

        made.append((env_id, kwargs))
        return default_make_env(env_id, kwargs)

    trajectories[-1].env_kwargs = {**trajectories[-1].env_kwargs, "top_k": 2}
    found = verify_trajectories(trajectories, make_env=make_env)
    assert len(made) == 2
    # with top_k=2 the recorded 3-passage observations no longer come back
    assert [(d.trajectory_id, d.field) for d in found] == [("g3-invalid", "observation")]
