"""TrajectoryWriter / readers: round trips, torn lines (by hand and from a SIGKILLed writer),
resuming after a torn line without losing bytes, and the metadata sidecar."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from creditgym.replay.io import (
    TornLineWarning,
    TrajectoryWriter,
    iter_trajectories,
    meta_path,
    read_metadata,
    read_trajectories,
    run_metadata,
)
from creditgym.trajectory import Trajectory, TrajectoryFormatError

REPO = Path(__file__).resolve().parents[2]


def _read_with_warnings(path, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trajs = read_trajectories(path, **kw)
    return trajs, [w.message for w in caught]


def test_round_trip_and_sidecar(traj_file, trajectories):
    back, warned = _read_with_warnings(traj_file)
    assert warned == []
    assert back == trajectories
    lines = traj_file.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(trajectories) + 1
    meta = read_metadata(traj_file)
    assert meta["schema"] == "creditgym.run/1" and meta["resumed"] == []
    assert meta["run"]["env_id"] == "creditgym/Search-v0"
    assert {"python", "numpy", "gymnasium", "creditgym"} <= set(meta["run"]["versions"])
    # the JSONL itself stays homogeneous: pandas reads one row per trajectory
    df = pd.read_json(traj_file, lines=True)
    assert len(df) == len(trajectories) and set(df["id"]) == {t.id for t in trajectories}


def test_non_ascii_and_line_separators_stay_on_one_line(tmp_path, trajectories):
    t = trajectories[0]
    t.observations[0] = "caf\u00e9 \u2028 line\u2029sep \u4e2d\n<information>x</information>"
    path = tmp_path / "u.jsonl"
    with TrajectoryWriter(path) as w:
        w.write(t)
    assert path.read_bytes().count(b"\n") == 1
    assert read_trajectories(path)[0].observations[0] == t.observations[0]
    assert not meta_path(path).exists()  # no metadata given, no sidecar


def test_torn_last_line_is_skipped_with_its_line_number(tmp_path, trajectories):
    path = tmp_path / "torn.jsonl"
    with TrajectoryWriter(path) as w:
        w.write_many(trajectories[:3])
    whole = json.dumps(trajectories[3].to_dict()).encode()
    with open(path, "ab") as f:
        f.write(whole[: len(whole) // 2])  # a writer killed mid-line
    back, warned = _read_with_warnings(path)
    assert [t.id for t in back] == [t.id for t in trajectories[:3]]
    assert len(warned) == 1 and isinstance(warned[0], TornLineWarning)
    assert warned[0].line == 4 and "line 4" in str(warned[0])
    with pytest.raises(TrajectoryFormatError, match="line 4"):
        read_trajectories(path, on_torn="error")
    assert len(list(iter_trajectories(path, on_torn="ignore"))) == 3


def test_bad_line_in_the_middle_is_an_error_naming_it(tmp_path, trajectories):
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(t.to_dict()) for t in trajectories[:3]]
    lines[1] = lines[1][:-5]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TrajectoryFormatError, match=r"line 2 is not valid JSON"):
        read_trajectories(path)
    record = trajectories[0].to_dict()
    record["rewards"] = record["rewards"] + [1.0]
    path.write_text(json.dumps(trajectories[1].to_dict()) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(TrajectoryFormatError, match=r"line 2: .*rewards="):
        read_trajectories(path)


def test_appending_after_a_torn_line_keeps_every_byte(tmp_path, trajectories):
    path = tmp_path / "resume.jsonl"
    with TrajectoryWriter(path, {"run": 1}) as w:
        w.write_many(trajectories[:2])
    torn = json.dumps(trajectories[2].to_dict()).encode()[:300]
    with open(path, "ab") as f:
        f.write(torn)
    with pytest.warns(TornLineWarning, match="line 3"):
        w = TrajectoryWriter(path, {"run": 2})
    with w:
        w.write_many(trajectories[3:5])
    assert w.moved_tail == tmp_path / "resume.jsonl.torn-3"
    assert w.moved_tail.read_bytes() == torn
    back, warned = _read_with_warnings(path)
    assert warned == []
    assert [t.id for t in back] == [t.id for t in trajectories[:2] + trajectories[3:5]]
    meta = read_metadata(path)
    assert meta["run"] == {"run": 1} and meta["resumed"] == [{"run": 2}]


def test_complete_last_line_without_newline_is_kept(tmp_path, trajectories):
    path = tmp_path / "nonl.jsonl"
    path.write_text(json.dumps(trajectories[0].to_dict()))  # e.g. written by another tool
    assert read_trajectories(path) == trajectories[:1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing torn, so no warning
        with TrajectoryWriter(path) as w:
            w.write(trajectories[1])
    assert read_trajectories(path) == trajectories[:2]
    assert not list(tmp_path.glob("*.torn-*"))


def test_records_without_the_replay_fields_still_load(tmp_path, trajectories):
    record = trajectories[0].to_dict()
    for key in (
        "env_id",
        "env_kwargs",
        "seed",
        "prompt_messages",
        "actions",
        "observations",
        "turn_metrics",
        "tool_calls",
        "finish_reasons",
        "terminated",
        "truncated",
        "error",
        "created",
    ):
        record.pop(key)
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(record) + "\n")
    (t,) = read_trajectories(path)
    assert t.actions == [] and t.env_id == "" and t.created == 0.0
    assert t.rewards == trajectories[0].rewards


_KILLED_WRITER = r"""
import sys
from creditgym.replay.io import TrajectoryWriter
from creditgym.trajectory import Trajectory
path, size = sys.argv[1], int(sys.argv[2])
with TrajectoryWriter(path, {"writer": "subprocess"}) as w:
    i = 0
    while True:
        obs = chr(ord("a") + i % 26) * size
        w.write(Trajectory(id=f"t{i}", group=f"g{i % 3}", task={"question": "q"}, prompt_ids=[1],
                           action_ids=[[2, 3]], action_logprobs=[[-0.1, -0.2]],
                           observation_ids=[[4]], rewards=[float(i)], anchors=["s"], valid=[True],
                           observations=[obs]))
        i += 1
"""


def test_writer_killed_with_sigkill_leaves_a_loadable_file(tmp_path):
    """Kill a real writer at arbitrary moments: every complete line loads, a torn tail is
    reported with its line number, and a new writer resumes the file."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    size = 4_000_000  # big lines make a kill inside a write likely
    rng = random.Random(0)
    saw_torn = False
    for attempt in range(8):  # until one kill lands inside a write (not guaranteed, so no assert)
        path = tmp_path / f"killed-{attempt}.jsonl"
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED_WRITER, str(path), str(size)], env=env
        )
        try:
            deadline = time.monotonic() + 60
            while (
                not path.exists() or path.stat().st_size < 3 * size
            ) and time.monotonic() < deadline:
                assert proc.poll() is None, "writer exited on its own"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.03))  # a moment unrelated to where the writer is
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        raw = path.read_bytes()
        complete = raw.count(b"\n")
        assert complete >= 3
        back, warned = _read_with_warnings(path)
        assert [t.id for t in back] == [f"t{i}" for i in range(complete)]
        assert all(t.observations[0] == chr(ord("a") + i % 26) * size for i, t in enumerate(back))
        if raw.endswith(b"\n"):
            assert warned == []
        else:
            saw_torn = True
            assert len(warned) == 1 and warned[0].line == complete + 1
            with pytest.warns(TornLineWarning):
                TrajectoryWriter(path).close()
            assert read_trajectories(path) == back
        assert read_metadata(path)["run"] == {"writer": "subprocess"}
        if saw_torn:
            break
    print(f"torn tail observed after {attempt + 1} kill(s): {saw_torn}")


def test_run_metadata_holds_versions_and_extras():
    meta = run_metadata(model="tiny", seeds=[1, 2])
    assert meta["model"] == "tiny" and meta["seeds"] == [1, 2]
    assert meta["versions"]["python"].count(".") == 2 and meta["hostname"]
    json.dumps(meta)  # JSON-ready


def test_writer_refuses_after_close(tmp_path, trajectories):
    w = TrajectoryWriter(tmp_path / "c.jsonl")
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write(trajectories[0])
    assert isinstance(trajectories[0], Trajectory)


def test_cli_reads_a_file_truncated_mid_line_with_a_clear_warning(traj_file, capsys):
    from creditgym.replay.cli import main

    raw = traj_file.read_bytes()
    traj_file.write_bytes(raw[: len(raw) - 1000])  # cut inside the 12th record
    assert main(["replay", "verify", str(traj_file)]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "line 12 is torn" in captured.err
    assert "11/11 replayed trajectories match" in captured.out
