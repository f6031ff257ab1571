"""One bad query never fails its batch-mates: query normalisation, Lucene's clause limit, the
in-process ``BatchingRetriever`` and the server's ``Batcher`` over a real Lucene index of the
built-in world and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import importlib.util
import threading

import aiohttp
import pytest

from creditgym.envs.defaults import ensure_world_index
from creditgym.envs.retrieval.base import Hit
from creditgym.envs.retrieval.batching import BatchingRetriever
from creditgym.envs.retrieval.query_text import normalize_queries, normalize_query
from creditgym.envs.retrieval.server import BackgroundServer
from creditgym.envs.world import WorldConfig

from .conftest import HOSTILE_QUERIES, TOPIC_DOCS

needs_lucene = pytest.mark.skipif(
    importlib.util.find_spec("pyserini") is None,
    reason="pyserini is not installed (it needs Python 3.11+)",
)

HOSTILE = HOSTILE_QUERIES
LONG = HOSTILE["1100_words"]


def test_normalize_query_replaces_lone_surrogates_and_keeps_the_rest():
    assert normalize_query("\ud800") == "\ufffd"
    assert normalize_query("a\udc00b\ud800") == "a\ufffdb\ufffd"
    assert normalize_query("\ud83d\ude00 pair") == "\U0001F600 pair"  # a pair is one character
    assert normalize_query("tab\tnl\nnul\x00bell\x07") == "tab\tnl\nnul bell "
    for q in ["", "  ", "plain words", "東京 😀", *HOSTILE.values()]:
        out = normalize_query(q)
        out.encode("utf-8")  # every result is encodable
        assert normalize_query(out) == out  # idempotent
    text = "ordinary query"
    assert normalize_query(text) is text  # no copy on the common path


def test_normalize_queries_names_what_is_not_a_string():
    with pytest.raises(TypeError, match=r"queries\[1\] must be a string, got int"):
        normalize_queries(["ok", 3])
    with pytest.raises(TypeError, match="wrap a single query in a list"):
        normalize_queries("one query")


class PoisonRetriever:
    """A real backend that refuses one specific query (as a broken backend would)."""

    def __init__(self, inner, poison: str = "POISON") -> None:
        self.inner, self.poison, self.calls = inner, poison, []

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        self.calls.append(list(queries))
        if self.poison in queries:
            raise RuntimeError(f"backend cannot search {self.poison!r}")
        return self.inner.search(queries, k)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def bm25s(small_corpus, tmp_path_factory):
    from creditgym.envs.retrieval.bm25 import BM25sRetriever, build_bm25s_index

    r = BM25sRetriever(build_bm25s_index(small_corpus, tmp_path_factory.mktemp("iso") / "idx"))
    yield r
    r.close()


def _concurrently(fns):
    """Run every fn in its own thread, started together; each result or exception, in order."""
    out: list = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def run(i):
        barrier.wait()
        try:
            out[i] = fns[i]()
        except Exception as exc:  # noqa: BLE001  # compared by the test
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a search never returned"
    return out


def test_batching_retriever_fails_only_the_caller_whose_query_breaks_the_backend(bm25s):
    backend = PoisonRetriever(bm25s)
    batching = BatchingRetriever(backend, window_s=0.05)
    queries = [[title] for _, title, _ in TOPIC_DOCS[:11]]
    queries.insert(5, ["POISON"])
    out = _concurrently([lambda q=q: batching.search(q, 3) for q in queries])
    for q, result in zip(queries, out):
        if q == ["POISON"]:
            assert isinstance(result, RuntimeError) and "POISON" in str(result)
        else:
            assert result == bm25s.search(q, 3) and result[0]
    assert batching.split_batches >= 1  # the poisoned batch really held other callers
    assert any(len(c) > 1 and "POISON" in c for c in backend.calls)


def test_batching_retriever_rejects_bad_input_in_the_callers_own_thread(bm25s):
    batching = BatchingRetriever(PoisonRetriever(bm25s), window_s=0.05)
    good = [lambda: batching.search(["Cheetah"], 3) for _ in range(5)]
    bad = [lambda: batching.search(["ok", None], 3), lambda: batching.search(["x"], 0),
           lambda: batching.search(["\ud800 Espresso"], 3)]
    out = _concurrently(good + bad)
    assert all(r == bm25s.search(["Cheetah"], 3) for r in out[:5])
    assert isinstance(out[5], TypeError) and isinstance(out[6], ValueError)
    assert out[7][0][0].docid == "d8"  # the surrogate was replaced, the word still found


def test_bm25s_answers_every_hostile_query_alone_and_in_a_batch(bm25s):
    good = bm25s.search(["Cheetah"], 3)
    for name, q in HOSTILE.items():
        alone = bm25s.search([q], 3)
        assert len(alone) == 1, name
        assert bm25s.search(["Cheetah", q], 3)[0] == good[0], name
    assert bm25s.search([""], 3) == [[]]
    assert bm25s.search(["Cheetah " + LONG], 1)[0][0].docid == "d0"


@pytest.fixture(scope="module")
def world_lucene():
    from creditgym.envs.retrieval.lucene import LuceneRetriever

    built = ensure_world_index(WorldConfig(), "lucene")
    r = LuceneRetriever(built.index)
    yield built, r
    r.close()


def _good_queries(built, n: int) -> list[str]:
    return [t.metadata["chain"][0]["query"] for t in built.world.questions("test")[:n]]


@needs_lucene
def test_lucene_answers_every_hostile_query_alone_and_in_a_batch(world_lucene):
    built, lucene = world_lucene
    good = _good_queries(built, 4)
    expected = lucene.search(good, 3)
    assert all(expected)
    for name, q in HOSTILE.items():
        assert len(lucene.search([q], 3)) == 1, name
        assert lucene.search([*good[:2], q, *good[2:]], 3) == [*expected[:2], lucene.search(
            [q], 3)[0], *expected[2:]], name
    for q in ["", " \t ", "?!.,;", "\x00"]:
        assert lucene.search([q], 3) == [[]]


@needs_lucene
def test_lucene_keeps_the_first_max_clauses_distinct_terms(world_lucene):
    built, lucene = world_lucene
    limit = lucene.max_clauses
    assert limit == 1024
    words = [f"zq{i}x" for i in range(limit + 76)]
    exactly = " ".join(words[:limit] + words[:10])  # repeats add no clause
    assert lucene._fit_clause_limit(exactly) == exactly
    cut = lucene._fit_clause_limit(" ".join(words))
    assert cut == " ".join(words[:limit])
    # a real title first still ranks its document first through the cut
    title = _good_queries(built, 1)[0]
    assert lucene.search([f"{title} {' '.join(words)}"], 1)[0][0].title == \
        lucene.search([title], 1)[0][0].title
    # hyphens and astral characters: terms are counted as Lucene sees them
    cut = lucene._fit_clause_limit("😀 " + "-".join(words))
    assert cut.startswith("😀 zq0x-") and cut.endswith(f"zq{limit - 2}x")


async def _post_all(url: str, bodies: list[dict]) -> list[tuple[int, dict]]:
    async with aiohttp.ClientSession() as session:
        async def one(body):
            async with session.post(url + "/retrieve", json=body) as resp:
                return resp.status, await resp.json()

        return await asyncio.gather(*(one(b) for b in bodies))


def _docs(hits: list[Hit]) -> list[dict]:
    return [{"document": {"id": h.docid, "contents": h.contents}, "score": h.score} for h in hits]


@needs_lucene
@pytest.mark.parametrize("bad", ["surrogate", "1100_words", "empty"])
def test_server_serves_30_good_requests_batched_with_a_bad_one(world_lucene, bad):
    built, lucene = world_lucene
    good = _good_queries(built, 30)
    expected = lucene.search(good, 3)
    bodies = [{"queries": [q], "topk": 3, "return_scores": True} for q in good]
    bodies.insert(17, {"queries": [HOSTILE[bad]], "topk": 3, "return_scores": True})
    with BackgroundServer(lucene, batch_window_ms=50) as server:
        answers = asyncio.run(_post_all(server.url, bodies))
        batcher_stats = asyncio.run(_health(server.url))
    bad_status, bad_body = answers.pop(17)
    assert bad_status == 200 and len(bad_body["result"]) == 1
    assert [status for status, _ in answers] == [200] * 30
    assert [body["result"][0] for _, body in answers] == [_docs(h) for h in expected]
    assert batcher_stats["batches"] < 31  # the bad query really shared a batch


async def _health(url: str) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/health") as resp:
            return await resp.json()


@needs_lucene
def test_server_fails_only_the_request_whose_query_breaks_the_backend(world_lucene):
    built, lucene = world_lucene
    good = _good_queries(built, 30)
    expected = lucene.search(good, 3)
    bodies = [{"queries": [q], "topk": 3, "return_scores": True} for q in good]
    bodies.insert(3, {"queries": [good[0], "POISON"], "topk": 3, "return_scores": True})
    backend = PoisonRetriever(lucene)
    with BackgroundServer(backend, batch_window_ms=50) as server:
        answers = asyncio.run(_post_all(server.url, bodies))
    bad_status, bad_body = answers.pop(3)
    assert bad_status == 500 and "POISON" in bad_body["error"]
    assert [status for status, _ in answers] == [200] * 30
    assert [body["result"][0] for _, body in answers] == [_docs(h) for h in expected]
    assert any(len(c) > 2 and "POISON" in c for c in backend.calls)  # it was batched


@needs_lucene
def test_server_rejects_what_it_cannot_normalise_with_4xx(world_lucene):
    _, lucene = world_lucene
    with BackgroundServer(lucene) as server:
        answers = asyncio.run(_post_all(server.url, [
            {"queries": ["ok", 7]}, {"query": None}, {"queries": ["\ud800", "\x00"]}]))
    assert answers[0][0] == 400 and "'queries'[1] must be a string" in answers[0][1]["error"]
    assert answers[1][0] == 400 and "'query' must be a string" in answers[1][1]["error"]
    assert answers[2] == (200, {"result": [[], []]})


@needs_lucene
def test_http_client_sends_every_hostile_query(world_lucene):
    from creditgym.envs.retrieval.http import HTTPRetriever

    built, lucene = world_lucene
    good = _good_queries(built, 2)
    with BackgroundServer(lucene) as server:
        client = HTTPRetriever(server.url, retries=0)
        try:
            for name, q in HOSTILE.items():
                hits = client.search([good[0], q, good[1]], 3)
                assert [[h.docid for h in row] for row in (hits[0], hits[2])] == [
                    [h.docid for h in row] for row in lucene.search(good, 3)], name
        finally:
            client.close()
