"""replay export: per-trajectory and per-turn tables that pandas and ``datasets`` load."""

from __future__ import annotations

import pandas as pd
import pytest

from creditgym.replay.cli import main
from creditgym.replay.export import ACTION_SEPARATOR, export_table


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_per_trajectory_table_loads_in_pandas_and_datasets(tmp_path, trajectories, suffix):
    import datasets

    trajectories[1].error = "backend error"
    out = export_table(trajectories, tmp_path / f"table.{suffix}")
    df = pd.read_parquet(out) if suffix == "parquet" else pd.read_json(out, lines=True)
    assert len(df) == len(trajectories)
    row = df.set_index("id").loc["g1-invalid"]
    t = trajectories[5]
    assert row["n_turns"] == t.n_turns and row["return"] == t.episode_return
    assert (
        row["question"] == t.task["question"]
        and list(row["golden_answers"]) == t.task["golden_answers"]
    )
    assert row["metric/em"] == 1.0 and row["metric/calls/search"] == t.metrics["calls/search"]
    assert row["actions"].split(ACTION_SEPARATOR) == t.actions
    assert df.set_index("id").loc["g0-wrong", "error"] == "backend error"
    ds = datasets.load_dataset(
        "parquet" if suffix == "parquet" else "json",
        data_files=str(out),
        split="train",
        cache_dir=str(tmp_path / "hf"),
    )
    assert ds.num_rows == len(trajectories) and ds[5]["id"] == "g1-invalid"
    assert ds[5]["golden_answers"] == t.task["golden_answers"]


def test_per_turn_table(tmp_path, trajectories, capsys):
    from creditgym.replay.rescore import rescore_trajectories

    scored = rescore_trajectories(trajectories, credit="grpo").trajectories
    src = tmp_path / "scored.jsonl"
    from creditgym.replay.io import write_trajectories

    write_trajectories(src, scored)
    out = tmp_path / "turns.parquet"
    assert main(["replay", "export", str(src), "-o", str(out), "--per-turn"]) == 0
    df = pd.read_parquet(out)
    assert len(df) == sum(t.n_turns for t in trajectories)
    first = df[(df["id"] == "g0-invalid")].sort_values("turn")
    assert list(first["valid"]) == [False, True, True]
    assert list(first["tools"].map(list)) == [[], ["search"], ["answer"]]
    assert first["observation"].iloc[1].lstrip().startswith("<information>")
    assert (df.loc[df["id"].str.endswith("expert"), "advantage_mean"] > 0).all()
    import datasets

    ds = datasets.load_dataset(
        "parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert ds.num_rows == len(df)
    assert main(["replay", "export", str(src), "-o", str(out), "--per-turn"]) == 2  # exists
