"""creditgym.files: the one atomic writer and the output guard, and the commands that use it."""

from __future__ import annotations

import json
import os

import pytest

from creditgym.cli import main
from creditgym.errors import OutputPathError
from creditgym.files import (
    atomic_write_text,
    atomic_writer,
    check_output,
    check_output_dir,
    json_line,
    replace_surrogates,
)


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(target) as f:
        f.write("half of the new")
        raise RuntimeError("boom")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(target, "lone \ud800")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_check_output_refuses_inputs_under_any_name(tmp_path, monkeypatch):
    src = tmp_path / "in.jsonl"
    src.write_text("x\n")
    (tmp_path / "link.jsonl").symlink_to(src)
    os.link(src, tmp_path / "hard.jsonl")
    monkeypatch.chdir(tmp_path)
    for name in (src, "./in.jsonl", "sub/../in.jsonl", "link.jsonl", "hard.jsonl"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(OutputPathError, match="is the input"):
            check_output(name, [src], force=True)
    with pytest.raises(OutputPathError, match="--force"):
        check_output(tmp_path / "hard.jsonl", [tmp_path / "other"])
    assert check_output(tmp_path / "new.jsonl", [src]) == tmp_path / "new.jsonl"
    with pytest.raises(OutputPathError, match="directory"):
        check_output(tmp_path / "sub", [src], force=True)
    with pytest.raises(OutputPathError, match="does not exist"):
        check_output(tmp_path / "nope" / "x.jsonl", [src])
    with pytest.raises(OutputPathError, match="holds the input"):
        check_output_dir(tmp_path, [src], force=True)
    with pytest.raises(OutputPathError, match="not empty"):
        check_output_dir(tmp_path / "..", [])


def test_lone_surrogates_json_escapes_and_text_replacement():
    record = {"a": "x\ud800y", "b": "é"}
    line = json_line(record)
    assert "\\ud800" in line and json.loads(line) == record
    line.encode("utf-8")
    assert json_line({"b": "é"}) == '{"b": "é"}'  # readable when there is nothing to escape
    assert replace_surrogates("x\ud800y\udfff") == "x\ufffdy\ufffd"


def test_world_and_index_refuse_to_clobber(tmp_path, capsys):
    out = tmp_path / "w"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["world", "--out", str(out), "--world-docs", "300"]) == 2
    assert "--force" in capsys.readouterr().err and not (out / "corpus.jsonl").exists()
    assert main(["world", "--out", str(out), "--world-docs", "300", "--force"]) == 0
    corpus = out / "corpus.jsonl"
    before = corpus.read_bytes()
    # an index folder holding its own corpus would be wiped by --overwrite
    args = ["index", "--corpus", str(corpus), "--backend", "bm25s", "--out", str(out), "--overwrite"]
    assert main(args) == 2
    assert "holds the input" in capsys.readouterr().err and corpus.read_bytes() == before


def test_plot_needs_force_and_never_writes_over_its_inputs(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"iteration": i, "rollout/success": i / 4, "update/loss": 1.0 - i / 4} for i in range(3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = (run / "metrics.jsonl").read_bytes()
    assert main(["plot", str(run)]) == 0
    png = run / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(run)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["plot", str(run), "--force"]) == 0
    assert main(["plot", str(run), "-o", str(run / "metrics.jsonl"), "--force"]) == 2
    assert (run / "metrics.jsonl").read_bytes() == metrics


def test_eval_refuses_an_existing_output_before_running_anything(tmp_path, capsys):
    out = tmp_path / "run.jsonl"
    out.write_text("an earlier run\n")
    args = ["eval", "--url", "http://127.0.0.1:9", "--model", "m", "--out", str(out)]
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "an earlier run\n"
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("{}\n")
    args = ["eval", "--url", "http://127.0.0.1:9", "--model", "m", "--out", str(tasks),
            "--env-arg", f"tasks_path={tasks}", "--force"]
    assert main(args) == 2
    assert "is the input" in capsys.readouterr().err and tasks.read_text() == "{}\n"
