"""The `creditgym` command: index, world and demo on the built-in world, errors as exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from creditgym.cli import main
from creditgym.envs.retrieval import RetrieverConfig, make_retriever


def test_world_then_index_a_corpus_file_and_search_it(tmp_path, capsys):
    assert main(["world", "--out", str(tmp_path / "w"), "--world-docs", "300"]) == 0
    corpus = tmp_path / "w" / "corpus.jsonl"
    test = [json.loads(line) for line in (tmp_path / "w" / "test.jsonl").read_text().splitlines()]
    assert len(corpus.read_text().splitlines()) == 300 and test and test[0]["metadata"]["chain"]
    capsys.readouterr()
    out = tmp_path / "idx"
    assert main(["index", "--corpus", str(corpus), "--backend", "bm25s", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    hop = test[0]["metadata"]["chain"][0]
    r = make_retriever(RetrieverConfig(backend="bm25s", index=str(out)))
    assert r.search([hop["query"]], 1)[0][0].docid == hop["docid"]


def test_index_refuses_to_overwrite_with_a_clear_error(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "1", "contents": "\\"A\\"\\nalpha"}\n')
    args = ["index", "--corpus", str(corpus), "--backend", "bm25s", "--out", str(tmp_path / "i")]
    assert main(args) == 0
    assert main(args) == 2
    assert "overwrite" in capsys.readouterr().err


def test_demo_answers_held_out_questions():
    proc = subprocess.run(
        [sys.executable, "-m", "creditgym.cli", "demo", "--backend", "bm25s", "--questions", "4"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "expert EM 1.00" in proc.stdout
