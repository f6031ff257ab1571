"""The bm25s backend: atomic builds, exact BM25 scores against a reference, Lucene-like analysis."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import pytest

from creditgym.envs.retrieval import RetrieverConfig, build_index, detect_backend, make_retriever
from creditgym.envs.retrieval.base import Hit, iter_corpus
from creditgym.envs.retrieval.bm25 import (
    META_FILE,
    BM25sRetriever,
    _porter,
    _split,
    build_bm25s_index,
)
from creditgym.errors import ConfigError, RetrievalError

from .conftest import TOPIC_DOCS

LUCENE_STOPWORDS = {
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
}


@pytest.fixture(scope="module")
def index(small_corpus, tmp_path_factory) -> Path:
    return build_bm25s_index(small_corpus, tmp_path_factory.mktemp("bm25") / "idx")


@pytest.fixture(scope="module")
def retriever(index):
    r = BM25sRetriever(index)
    yield r
    r.close()


def _analyze(text: str) -> list[str]:
    stem = _porter()
    words = [w for w in _split(text.lower()) if w not in LUCENE_STOPWORDS]
    return [stem.stemWord(w) for w in words] if stem else words


def _reference_bm25(corpus: Path, query: str, k1=0.9, b=0.4) -> dict[str, float]:
    """Lucene's BM25 (no (k1+1) factor, exact document lengths), written out by hand."""
    docs = {docid: Counter(_analyze(text)) for docid, text in iter_corpus(corpus)}
    n = len(docs)
    avgdl = sum(sum(c.values()) for c in docs.values()) / n
    scores: dict[str, float] = {}
    for term, qtf in Counter(_analyze(query)).items():
        df = sum(1 for c in docs.values() if term in c)
        if df == 0:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for docid, c in docs.items():
            tf = c.get(term, 0)
            if tf:
                dl = sum(c.values())
                w = idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))
                scores[docid] = scores.get(docid, 0.0) + qtf * w
    return scores


def test_title_queries_rank_their_passage_first(retriever):
    titles = [title for _, title, _ in TOPIC_DOCS]
    results = retriever.search(titles, 3)
    assert [hits[0].docid for hits in results] == [docid for docid, _, _ in TOPIC_DOCS]
    for hits in results:
        assert all(isinstance(h, Hit) for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_scores_equal_a_hand_written_lucene_bm25(retriever, small_corpus):
    queries = ["fastest land animal", "river market harbour bridge", "Nobel Prize physicist",
               "ash ash volcano", "the tower of Tokyo"]
    for query, hits in zip(queries, retriever.search(queries, 10)):
        ref = _reference_bm25(small_corpus, query)
        best = sorted(ref.items(), key=lambda kv: (-kv[1], kv[0]))
        assert len(hits) == min(10, len(ref))
        for hit in hits:
            assert hit.score == pytest.approx(ref[hit.docid], rel=1e-4)
        # the same documents, up to ties at the cut-off
        cutoff = hits[-1].score
        assert {h.docid for h in hits} >= {d for d, s in best if s > cutoff * (1 + 1e-4)}


def test_hits_carry_title_text_and_contents(retriever):
    (hit,), = retriever.search(["Cheetah"], 1)
    assert hit.docid == "d0" and hit.title == "Cheetah"
    assert hit.text.startswith("The cheetah is a large cat")
    assert hit.contents == f'"Cheetah"\n{hit.text}'


def test_unmatched_queries_get_no_hits(retriever):
    assert retriever.search(["", "the of and", "xyzzyplugh"], 3) == [[], [], []]


def test_fewer_matches_than_k_and_k_above_corpus_size(retriever):
    (hits,) = retriever.search(["Goldberg"], 50)
    assert [h.docid for h in hits] == ["d3"]
    (hits,) = retriever.search(["river market"], 10_000)
    assert 1 < len(hits) <= 120


def test_batched_equals_one_at_a_time_whatever_the_batch(retriever):
    queries = [t for _, t, _ in TOPIC_DOCS] + ["river harbour", "castle village farm", "zzz"]
    batched = retriever.search(queries, 5)
    assert batched == [retriever.search([q], 5)[0] for q in queries]
    assert retriever.search(list(reversed(queries)), 5) == list(reversed(batched))


def test_repeated_query_terms_count_twice(retriever, small_corpus):
    (once,) = retriever.search(["volcano ash"], 1)
    (twice,) = retriever.search(["volcano ash ash"], 1)
    ref = _reference_bm25(small_corpus, "volcano ash ash")
    assert twice[0].score == pytest.approx(ref[twice[0].docid], rel=1e-4)
    assert twice[0].score > once[0].score


def test_analyzer_is_lucene_like():
    assert _split("marie curie's nobel prize, 1903 x") == ["marie", "curie", "nobel", "prize",
                                                         "1903", "x"]
    if _porter() is not None:
        assert _analyze("Running cities") == ["run", "citi"]


@pytest.mark.skipif(_porter() is None, reason="PyStemmer not installed")
def test_stemming_matches_inflections(retriever):
    (hits,) = retriever.search(["fermented doughs"], 1)  # corpus says "fermentation of dough"
    assert hits[0].docid == "d19"


def test_build_is_atomic_and_refuses_to_overwrite(small_corpus, tmp_path):
    target = tmp_path / "idx"
    build_bm25s_index(small_corpus, target)
    assert (target / META_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temp dirs left
    with pytest.raises(RetrievalError, match="already exists"):
        build_bm25s_index(small_corpus, target)
    meta = json.loads((target / META_FILE).read_text())
    assert meta["documents"] == 120 and meta["k1"] == 0.9 and meta["b"] == 0.4
    build_bm25s_index(small_corpus, target, overwrite=True, k1=1.2, b=0.75)
    assert json.loads((target / META_FILE).read_text())["k1"] == 1.2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_failed_build_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "contents": "ok"}\nnot json\n')
    with pytest.raises(Exception, match="bad.jsonl:2"):
        build_bm25s_index(bad, tmp_path / "idx")
    assert not (tmp_path / "idx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.jsonl"]


def test_k1_b_are_fixed_at_build_time(index, small_corpus, tmp_path):
    r = BM25sRetriever(index, k1=0.9, b=0.4)  # equal to the index's: fine
    r.close()
    with pytest.raises(ConfigError, match="built with k1=0.9"):
        BM25sRetriever(index, k1=1.2)
    other = build_bm25s_index(small_corpus, tmp_path / "idx", k1=1.2, b=0.75)
    with BM25sRetriever(other) as r2:
        (hits,) = r2.search(["fastest land animal"], 3)
        ref = _reference_bm25(small_corpus, "fastest land animal", k1=1.2, b=0.75)
        assert hits[0].score == pytest.approx(ref[hits[0].docid], rel=1e-4)


def test_not_an_index(tmp_path):
    with pytest.raises(RetrievalError, match="not a bm25s index"):
        BM25sRetriever(tmp_path)


def test_closed_retriever_refuses(index):
    r = BM25sRetriever(index)
    r.close()
    with pytest.raises(RetrievalError, match="closed"):
        r.search(["x"], 1)


def test_factory_builds_and_opens_bm25s(small_corpus, tmp_path):
    path = build_index("bm25s", small_corpus, tmp_path / "i", threads=4)  # threads: ignored
    assert detect_backend(path) == "bm25s"
    r = make_retriever(RetrieverConfig(backend="bm25s", index=str(path)))
    try:
        assert r.search(["Sahara desert"], 1)[0][0].docid == "d12"
    finally:
        r.close()


def test_config_validation():
    with pytest.raises(ConfigError, match="needs url"):
        RetrieverConfig(backend="http")
    with pytest.raises(ConfigError, match="needs index"):
        RetrieverConfig(backend="bm25s")
    with pytest.raises(ConfigError, match="not one of"):
        RetrieverConfig(backend="solr", index="x")  # type: ignore[arg-type]


def test_importing_the_package_starts_no_jvm_and_no_torch():
    import subprocess
    import sys

    code = ("import sys, creditgym.envs.retrieval as r; "
            "r.RetrieverConfig(backend='bm25s', index='x'); "
            "print('jnius' in sys.modules, 'torch' in sys.modules, 'bm25s' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]


def test_agrees_with_lucene(small_corpus, tmp_path, retriever):
    lucene = pytest.importorskip("creditgym.envs.retrieval.lucene")
    pytest.importorskip("pyserini")
    try:
        path = lucene.build_lucene_index(small_corpus, tmp_path / "lucene")
        lr = lucene.LuceneRetriever(path)
    except RetrievalError as exc:  # no Java here
        pytest.skip(str(exc))
    try:
        queries = [t for _, t, _ in TOPIC_DOCS] + [
            "fastest land animal", "who discovered penicillin", "largest hot desert",
            "highest mountain above sea level", "paper folding art", "bicycle race in France"]
        ours, theirs = retriever.search(queries, 3), lr.search(queries, 3)
        for q, a, b in zip(queries, ours, theirs):
            assert a[0].docid == b[0].docid, q
            assert a[0].score == pytest.approx(b[0].score, rel=0.05), q
    finally:
        lr.close()


