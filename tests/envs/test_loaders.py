"""Search-R1 task files: training parquet and FlashRAG-style JSONL."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from creditgym.envs.loaders import load_searchr1_tasks
from creditgym.errors import TaskFormatError

PREFIX = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first "
    "every time you get new information. ... For example, <answer> Beijing </answer>. Question: "
)


def write_searchr1_parquet(path, with_question=True):
    rows = []
    for i, (q, golds) in enumerate([("who wrote hamlet?", ["Shakespeare", "William Shakespeare"]),
                                    ("capital of france?", ["Paris"])]):
        row = {
            "data_source": "nq",
            "prompt": [{"role": "user", "content": PREFIX + q + "\n"}],
            "ability": "fact-reasoning",
            "reward_model": {"style": "rule", "ground_truth": {"target": np.array(golds)}},
            "extra_info": {"split": "train", "index": i},
        }
        if with_question:
            row["question"] = q
        rows.append(row)
    pd.DataFrame(rows).to_parquet(path)


@pytest.mark.parametrize("with_question", [True, False])
def test_searchr1_parquet(tmp_path, with_question):
    path = tmp_path / "train.parquet"
    write_searchr1_parquet(path, with_question)
    tasks = load_searchr1_tasks(path)
    assert [t.question for t in tasks] == ["who wrote hamlet?", "capital of france?"]
    assert tasks[0].golden_answers == ("Shakespeare", "William Shakespeare")
    assert tasks[0].id == "train-0" and tasks[0].data_source == "nq"
    assert tasks[0].metadata["split"] == "train"
    assert tasks[0].metadata["prompt"].startswith("Answer the given question.")
    json.dumps([t.to_dict() for t in tasks])  # JSON-serialisable, numpy gone
    assert len(load_searchr1_tasks(path, limit=1)) == 1
    assert load_searchr1_tasks(path, split="test") == []


def test_flashrag_jsonl_and_directory(tmp_path):
    d = tmp_path / "nq"
    d.mkdir()
    rows = [
        {"id": "test_0", "question": "who wrote hamlet?", "golden_answers": ["Shakespeare"]},
        {"id": "test_1", "question": "capital of france?", "golden_answers": "Paris",
         "metadata": {"hops": 1}},
    ]
    (d / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    tasks = load_searchr1_tasks(d, split="test")
    assert [t.id for t in tasks] == ["test_0", "test_1"]
    assert tasks[1].golden_answers == ("Paris",) and tasks[1].metadata == {"hops": 1}
    assert tasks[0].data_source == "nq"  # from the folder of a split file
    assert load_searchr1_tasks(d / "test.jsonl", data_source="mine")[0].data_source == "mine"
    with pytest.raises(TaskFormatError, match="pass split"):
        load_searchr1_tasks(d)
    with pytest.raises(TaskFormatError, match="no dev.parquet or dev.jsonl"):
        load_searchr1_tasks(d, split="dev")


def test_json_array_file(tmp_path):
    path = tmp_path / "qs.json"
    path.write_text(json.dumps([{"question": "q?", "reward_model": {"ground_truth": {"target": "a"}}}]))
    (task,) = load_searchr1_tasks(path)
    assert task.id == "qs-0" and task.golden_answers == ("a",) and task.data_source == "qs"


@pytest.mark.parametrize(
    "row,fragment",
    [
        ({"golden_answers": ["a"]}, "no question"),
        ({"question": "q"}, "no gold answers"),
        ({"question": "q", "golden_answers": []}, "non-empty list"),
        ({"question": "q", "golden_answers": [""]}, "every gold answer is empty"),
        ({"prompt": [{"role": "system", "content": "x"}], "golden_answers": ["a"]}, "no user message"),
    ],
)
def test_errors_name_file_and_row(tmp_path, row, fragment):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "fine", "golden_answers": ["ok"]}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(TaskFormatError) as exc:
        load_searchr1_tasks(path)
    assert fragment in str(exc.value) and f"{path}:2" in str(exc.value)


def test_file_errors(tmp_path):
    with pytest.raises(TaskFormatError, match="does not exist"):
        load_searchr1_tasks(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(TaskFormatError, match=r"bad.jsonl:1: not valid JSON"):
        load_searchr1_tasks(bad)
    other = tmp_path / "x.csv"
    other.write_text("a")
    with pytest.raises(TaskFormatError, match="unknown task file type"):
        load_searchr1_tasks(other)
    dup = tmp_path / "dup.jsonl"
    dup.write_text(json.dumps({"id": 1, "question": "q", "golden_answers": ["a"]}) + "\n" +
                   json.dumps({"id": 1, "question": "r", "golden_answers": ["b"]}) + "\n")
    with pytest.raises(TaskFormatError, match="appears twice"):
        load_searchr1_tasks(dup)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(TaskFormatError, match="not a readable parquet"):
        load_searchr1_tasks(broken)
