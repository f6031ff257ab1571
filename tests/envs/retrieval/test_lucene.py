"""Lucene BM25 through pyserini: real indexes built from a small corpus, real searches."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from creditgym.envs.retrieval.base import Hit, Retriever, iter_corpus, parse_contents
from creditgym.errors import CorpusFormatError, RetrievalError

from .conftest import TOPIC_DOCS, write_corpus

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pyserini") is None,
    reason="pyserini is not installed (it needs Python 3.11+)",
)

NASTY_QUERIES = [
    'AND (',
    '"',
    'title: cheetah',
    'what? is: "this" (really) AND OR NOT',
    "field:value^2 ~ * ? [a TO b] {c TO d} \\ / ! + - && ||",
    ")))(((",
    "***",
    "cheetah~0.5",
]


@pytest.fixture(scope="module")
def lucene_index(small_corpus, tmp_path_factory) -> Path:
    from creditgym.envs.retrieval.lucene import build_lucene_index

    return build_lucene_index(small_corpus, tmp_path_factory.mktemp("lucene") / "index")


@pytest.fixture(scope="module")
def retriever(lucene_index):
    from creditgym.envs.retrieval.lucene import LuceneRetriever

    r = LuceneRetriever(lucene_index)
    yield r
    r.close()


def test_ensure_jvm_idempotent():
    from creditgym.envs.retrieval.jvm import ensure_jvm

    threads = [threading.Thread(target=ensure_jvm) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ensure_jvm()
    import jnius

    assert jnius.autoclass("io.anserini.search.SimpleSearcher") is not None


def test_build_writes_index_and_metadata(lucene_index, small_corpus):
    from creditgym.envs.retrieval.lucene import META_FILE, is_lucene_index

    assert is_lucene_index(lucene_index)
    meta = json.loads((lucene_index / META_FILE).read_text())
    assert meta["backend"] == "lucene"
    assert meta["num_docs"] == sum(1 for _ in iter_corpus(small_corpus))
    # No temporary or staging directories left next to the index.
    assert [p.name for p in lucene_index.parent.iterdir()] == [lucene_index.name]


def test_implements_retriever(retriever):
    assert isinstance(retriever, Retriever)
    assert retriever.num_docs == 120


@pytest.mark.parametrize("docid,title,body", TOPIC_DOCS, ids=[d[0] for d in TOPIC_DOCS])
def test_title_query_ranks_its_doc_first(retriever, docid, title, body):
    (hits,) = retriever.search([title], 5)
    assert hits, title
    assert hits[0].docid == docid
    assert hits[0].title == title
    assert hits[0].text == body
    assert all(isinstance(h, Hit) for h in hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_batched_equals_single(retriever):
    queries = [t for _, t, _ in TOPIC_DOCS] + ["river harbour market", "fastest land animal"]
    batched = retriever.search(queries, 5)
    singles = [retriever.search([q], 5)[0] for q in queries]
    assert batched == singles
    # Duplicate queries in one batch each get their own (equal) answer.
    assert retriever.search(["Chess", "Chess"], 3) == [batched[13][:3]] * 2


def test_k_respected(retriever):
    q = ["river valley market harbour council"]  # filler words: many matching documents
    for k in (1, 3, 10):
        (hits,) = retriever.search(q, k)
        assert len(hits) == k
    (many,) = retriever.search(q, 1000)
    assert 10 < len(many) <= 120
    assert len({h.docid for h in many}) == len(many)
    with pytest.raises(ValueError):
        retriever.search(q, 0)
    with pytest.raises(TypeError):
        retriever.search("a single string", 3)  # type: ignore[arg-type]
    assert retriever.search([], 3) == []


def test_empty_and_stopword_queries_get_no_hits(retriever):
    out = retriever.search(["", "   ", "the of and", "cheetah", "?!"], 3)
    assert out[0] == out[1] == out[2] == out[4] == []
    assert out[3][0].docid == "d0"


def test_unicode_queries(retriever):
    queries = ["Zürich", "東京タワー", "Московский Кремль", "🐆 cheetah", "naïve café"]
    out = retriever.search(queries, 3)
    assert out[0][0].docid == "d15"
    assert out[1][0].docid == "d16"
    assert out[2][0].docid == "d17"
    assert out[3][0].docid == "d0"
    assert isinstance(out[4], list)


def test_query_syntax_characters_do_not_raise(retriever):
    out = retriever.search(NASTY_QUERIES, 3)
    assert len(out) == len(NASTY_QUERIES)
    assert all(isinstance(hits, list) for hits in out)
    # Terms around the syntax still count: it is a bag of words, not a Lucene query string.
    assert retriever.search(["cheetah AND ("], 1)[0][0].docid == "d0"


def test_concurrent_searches_agree(retriever):
    queries = [t for _, t, _ in TOPIC_DOCS]
    expected = retriever.search(queries, 3)
    results: list = [None] * 4
    errors: list = []

    def work(i: int) -> None:
        try:
            results[i] = retriever.search(queries, 3)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r == expected for r in results)


def test_missing_index_names_path(tmp_path):
    from creditgym.envs.retrieval.lucene import LuceneRetriever

    missing = tmp_path / "no-such-index"
    with pytest.raises(RetrievalError, match=str(missing)):
        LuceneRetriever(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RetrievalError, match="not a Lucene index"):
        LuceneRetriever(tmp_path / "empty")


def test_closed_retriever_raises(lucene_index):
    from creditgym.envs.retrieval.lucene import LuceneRetriever

    with LuceneRetriever(lucene_index) as r:
        assert r.search(["cheetah"], 1)[0][0].docid == "d0"
    with pytest.raises(RetrievalError, match="closed"):
        r.search(["cheetah"], 1)
    r.close()  # twice is fine


def test_existing_index_needs_overwrite(lucene_index, small_corpus):
    from creditgym.envs.retrieval.lucene import build_lucene_index

    with pytest.raises(RetrievalError, match="overwrite"):
        build_lucene_index(small_corpus, lucene_index)


def test_failed_rebuild_leaves_existing_index_untouched(small_corpus, tmp_path):
    from creditgym.envs.retrieval.lucene import LuceneRetriever, build_lucene_index

    target = build_lucene_index(small_corpus, tmp_path / "idx")
    before = sorted(p.name for p in target.iterdir())

    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text("not json at all\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match="bad.jsonl:1"):
        build_lucene_index(bad_json, target, overwrite=True)

    # Valid JSON, but nothing Anserini can index: fails after the JVM build started.
    empty = tmp_path / "empty.jsonl"
    empty.write_text("".join(json.dumps({"id": f"e{i}", "contents": ""}) + "\n"
                             for i in range(3)), encoding="utf-8")
    with pytest.raises(RetrievalError, match="indexed no document"):
        build_lucene_index(empty, target, overwrite=True)

    assert sorted(p.name for p in target.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "empty.jsonl", "idx"]
    with LuceneRetriever(target) as r:
        assert r.search(["cheetah"], 1)[0][0].docid == "d0"


def test_overwrite_replaces_index(small_corpus, tmp_path):
    from creditgym.envs.retrieval.lucene import LuceneRetriever, build_lucene_index

    target = build_lucene_index(small_corpus, tmp_path / "idx")
    tiny = write_corpus(tmp_path / "tiny.txt", [("t1", "Quokka", "A quokka is a small "
                                                 "wallaby found on Rottnest Island.")])
    build_lucene_index(tiny, target, overwrite=True)
    with LuceneRetriever(target) as r:
        assert r.num_docs == 1
        assert r.search(["cheetah"], 3) == [[]]
        (hits,) = r.search(["quokka"], 3)
        assert [(h.docid, h.title) for h in hits] == [("t1", "Quokka")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "tiny.txt"]


def test_contents_only_index_opens(small_corpus, tmp_path):
    """Indexes storing plain ``contents`` and no ``raw`` (some prebuilt ones) give full hits."""
    from creditgym.envs.retrieval.jvm import ensure_jvm
    from creditgym.envs.retrieval.lucene import LuceneRetriever

    ensure_jvm()
    from jnius import autoclass

    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "c.jsonl").write_bytes(small_corpus.read_bytes())
    args = autoclass("io.anserini.index.IndexCollection$Args")()
    args.collectionClass = "JsonCollection"
    args.input = str(inp)
    args.index = str(tmp_path / "idx")
    args.storeContents = True
    args.storeRaw = False
    args.quiet = True
    autoclass("io.anserini.index.IndexCollection")(args).run()
    with LuceneRetriever(tmp_path / "idx") as r:
        (hits,) = r.search(["Marie Curie"], 1)
    assert (hits[0].docid, hits[0].title) == ("d7", "Marie Curie")
    assert hits[0].text.startswith("Marie Curie was a Polish")


def test_hit_from_raw_formats():
    from creditgym.envs.retrieval.lucene import _hit_from_raw

    wiki = json.dumps({"id": "1", "contents": '"Aaron"\nAaron is a prophet.'})
    assert _hit_from_raw("1", wiki, None, 2.0) == Hit("1", "Aaron", "Aaron is a prophet.", 2.0)
    beir = json.dumps({"_id": "7", "title": "T", "text": "body"})
    assert _hit_from_raw("7", beir, None, 1.0) == Hit("7", "T", "body", 1.0)
    assert _hit_from_raw("2", None, '"B"\nbee', 1.0) == Hit("2", "B", "bee", 1.0)
    assert _hit_from_raw("3", "plain passage", None, 1.0) == Hit("3", "", "plain passage", 1.0)
    assert _hit_from_raw("4", "{not json", None, 1.0) == Hit("4", "", "{not json", 1.0)
    assert _hit_from_raw("5", None, None, 1.0) == Hit("5", "", "", 1.0)


def test_missing_java_is_a_clear_error(tmp_path):
    """In a fresh interpreter: a bad $CREDITGYM_JAVA_HOME gives a RetrievalError, no crash."""
    code = (
        "from creditgym.envs.retrieval.jvm import ensure_jvm\n"
        "from creditgym.errors import RetrievalError\n"
        "try:\n    ensure_jvm()\nexcept RetrievalError as e:\n    print('ERR', e)\n"
    )
    env = dict(os.environ, CREDITGYM_JAVA_HOME=str(tmp_path / "nojava"))
    root = Path(__file__).resolve().parents[3]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "CREDITGYM_JAVA_HOME" in out.stdout


def test_agrees_with_bm25s(small_corpus, retriever, tmp_path):
    """pyserini and bm25s rank alike on the same corpus (top-k sets, not exact order)."""
    # Topical queries have one clear answer; filler queries match many near-tied passages,
    # where Lucene's lossy length norms may reorder, so only their top-k sets are compared.
    topical = [t for _, t, _ in TOPIC_DOCS] + [
        "fastest land animal", "coral reef off Australia", "Nobel prize physicist",
        "coffee brewed under pressure", "largest hot desert", "paper folding art",
    ]
    queries = topical + [
        "river valley harbour", "castle abbey village", "winter harvest grain market",
        "railway station bridge", "treaty border army", "mayor council census",
    ]
    try:
        from creditgym.envs.retrieval.bm25 import BM25sRetriever, build_bm25s_index
    except ImportError:
        BM25sRetriever = None
    k = 5
    lucene = retriever.search(queries, k)
    if BM25sRetriever is not None:
        idx = build_bm25s_index(small_corpus, tmp_path / "bm25s", k1=0.9, b=0.4)
        with BM25sRetriever(idx) as r:
            other = r.search(queries, k)
        other_ids = [[h.docid for h in hits] for hits in other]
    else:  # the bm25s library directly
        bm25s = pytest.importorskip("bm25s")
        rows = list(iter_corpus(small_corpus))
        texts = [" ".join(parse_contents(c)) for _, c in rows]
        model = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
        model.index(bm25s.tokenize(texts, stopwords="en", show_progress=False),
                    show_progress=False)
        res, _ = model.retrieve(bm25s.tokenize(queries, stopwords="en", show_progress=False),
                                k=k, show_progress=False)
        other_ids = [[rows[i][0] for i in r] for r in res]
    overlaps = []
    for q, a, b in zip(queries, lucene, other_ids):
        sa, sb = [h.docid for h in a], b
        overlaps.append(len(set(sa) & set(sb)) / max(1, min(len(sa), len(sb))))
        assert sa and sb, q
        if q in topical:
            assert sa[0] == sb[0], (q, sa, sb)
    assert sum(overlaps) / len(overlaps) >= 0.8, overlaps
    assert min(overlaps) >= 0.6, list(zip(queries, overlaps))


def test_stemmer_none_is_recorded_and_used_at_search_time(tmp_path):
    from creditgym.envs.retrieval.lucene import LuceneRetriever, build_lucene_index

    corpus = tmp_path / "names.jsonl"
    docs = {"1": '"Breigos"\nBreigos is a city.', "2": '"Zego Breigo"\nZego Breigo is a painter.'}
    corpus.write_text("".join(json.dumps({"id": i, "contents": c}) + "\n" for i, c in docs.items()))
    porter = build_lucene_index(corpus, tmp_path / "porter")
    plain = build_lucene_index(corpus, tmp_path / "plain", stemmer="none")
    with LuceneRetriever(porter) as r:
        assert r.stemmer == "porter"
        assert {h.docid for h in r.search(["Breigos"], 5)[0]} == {"1", "2"}  # both stem to breigo
    with LuceneRetriever(plain) as r:
        assert r.stemmer == "none"
        assert [h.docid for h in r.search(["Breigos"], 5)[0]] == ["1"]
    with pytest.raises(RetrievalError, match="stemmer"):
        build_lucene_index(corpus, tmp_path / "bad", stemmer="snowball")
