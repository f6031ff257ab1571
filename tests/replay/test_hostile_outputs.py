"""Replay commands that write never clobber an input, never replace without --force, and write
atomically; records holding a lone surrogate ("\\ud800") are written without crashing."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from creditgym.replay.cli import main
from creditgym.replay.io import meta_path, read_trajectories, write_trajectories


@pytest.fixture()
def surrogate_file(tmp_path, trajectories):
    """The recorded file with a lone surrogate in an observation, an action text and a question."""
    t = trajectories[0]
    t.observations[0] = "before \ud800 after"
    t.task["question"] = t.task["question"] + " \udfff"
    return write_trajectories(tmp_path / "bad.jsonl", trajectories, {"note": "lone \ud800"})


def _same_bytes(path, before: bytes) -> bool:
    return path.read_bytes() == before


@pytest.mark.parametrize("command", ["html", "export", "rescore"])
def test_output_that_is_the_input_is_refused_under_any_name(command, traj_file, capsys, monkeypatch):
    before = traj_file.read_bytes()
    tail = {"html": [], "export": [], "rescore": ["--credit", "grpo"]}[command]
    link = traj_file.with_name("link.jsonl")
    link.symlink_to(traj_file)
    hard = traj_file.with_name("hard.jsonl")
    os.link(traj_file, hard)
    monkeypatch.chdir(traj_file.parent)
    for out in (traj_file, link, hard, f"./{traj_file.name}", meta_path(traj_file)):
        assert main(["replay", command, str(traj_file), "-o", str(out), "--force", *tail]) == 2
        assert "is the input" in capsys.readouterr().err
        assert _same_bytes(traj_file, before)
    assert read_trajectories(traj_file)  # still a trajectory file


@pytest.mark.parametrize("command", ["html", "export", "rescore"])
def test_existing_output_needs_force(command, traj_file, tmp_path, capsys):
    tail = {"html": [], "export": [], "rescore": ["--credit", "grpo"]}[command]
    out = tmp_path / "existing.out"
    out.write_text("precious")
    assert main(["replay", command, str(traj_file), "-o", str(out), *tail]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "precious"
    assert main(["replay", command, str(traj_file), "-o", str(out), "--force", *tail]) == 0
    assert out.read_text() != "precious"


def test_a_lone_surrogate_round_trips_through_the_trajectory_file(surrogate_file):
    t = read_trajectories(surrogate_file)[0]
    assert t.observations[0] == "before \ud800 after"  # kept exactly, as a JSON escape
    surrogate_file.read_bytes().decode("utf-8")  # the file itself is valid UTF-8
    assert json.loads(meta_path(surrogate_file).read_text())["run"]["note"] == "lone \ud800"


def test_existing_outputs_are_replaced_validly_with_a_lone_surrogate(surrogate_file, tmp_path):
    outs = {
        "html": tmp_path / "p.html",
        "jsonl": tmp_path / "t.jsonl",
        "parquet": tmp_path / "t.parquet",
        "rescore": tmp_path / "r.jsonl",
    }
    for out in outs.values():
        out.write_text("old")
    src = str(surrogate_file)
    assert main(["replay", "html", src, "-o", str(outs["html"]), "--force"]) == 0
    assert main(["replay", "export", src, "-o", str(outs["jsonl"]), "--force", "--per-turn"]) == 0
    assert main(["replay", "export", src, "-o", str(outs["parquet"]), "--force"]) == 0
    args = ["replay", "rescore", src, "-o", str(outs["rescore"]), "--force", "--credit", "grpo"]
    assert main(args) == 0
    page = outs["html"].read_text(encoding="utf-8")
    assert "before \ufffd after" in page
    rows = [json.loads(line) for line in outs["jsonl"].read_text(encoding="utf-8").splitlines()]
    assert rows[0]["observation"] == "before \ud800 after"
    frame = pd.read_parquet(outs["parquet"])
    assert frame["question"][0].endswith(" \ufffd")
    assert read_trajectories(outs["rescore"])[0].observations[0] == "before \ud800 after"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_failing_write_leaves_the_old_output_byte_identical(tmp_path, trajectories):
    out = write_trajectories(tmp_path / "out.jsonl", trajectories[:2], {"run": 1})
    before, meta_before = out.read_bytes(), meta_path(out).read_bytes()

    def dies_half_way():
        yield trajectories[0]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_trajectories(out, dies_half_way(), {"run": 2}, overwrite=True)
    assert out.read_bytes() == before and meta_path(out).read_bytes() == meta_before
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl", "out.jsonl.meta.json"]
