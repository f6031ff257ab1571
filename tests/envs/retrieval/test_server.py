"""The retrieval server over real HTTP on 127.0.0.1: protocol, validation, batching, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from creditgym.envs.retrieval.bm25 import BM25sRetriever, build_bm25s_index
from creditgym.envs.retrieval.server import BackgroundServer, parse_request

from .conftest import TOPIC_DOCS

ROOT = Path(__file__).parents[3]


@pytest.fixture(scope="module")
def index(small_corpus, tmp_path_factory) -> Path:
    return build_bm25s_index(small_corpus, tmp_path_factory.mktemp("srv") / "idx")


@pytest.fixture(scope="module")
def retriever(index):
    r = BM25sRetriever(index)
    yield r
    r.close()


@pytest.fixture(scope="module")
def server(retriever):
    with BackgroundServer(retriever, max_queries=8, max_topk=20, max_body_bytes=4096) as s:
        yield s


def post(url: str, body: bytes | str | dict, *, path="/retrieve", method="POST"):
    """(status, parsed JSON) of one request, 4xx/5xx included."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    req = urllib.request.Request(url + path, data=body, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get(url: str, path: str):
    try:
        with urllib.request.urlopen(url + path, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def expected(retriever, queries, k, scores=True):
    out = []
    for hits in retriever.search(queries, k):
        docs = [{"id": h.docid, "contents": h.contents} for h in hits]
        out.append([{"document": d, "score": h.score} for d, h in zip(docs, hits)]
                   if scores else docs)
    return out


def test_binds_loopback_and_reports_health(server):
    assert server.url.startswith("http://127.0.0.1:")
    status, body = get(server.url, "/health")
    assert status == 200
    assert body["status"] == "ok" and body["documents"] == 120


def test_batch_form_with_scores(server, retriever):
    queries = ["fastest land animal", "Sahara desert", "xyzzy"]
    status, body = post(server.url, {"queries": queries, "topk": 3, "return_scores": True})
    assert status == 200
    assert body == {"result": expected(retriever, queries, 3)}
    first = body["result"][0][0]
    assert first["document"]["id"] == "d0"
    assert first["document"]["contents"].startswith('"Cheetah"\n')
    assert body["result"][2] == []


def test_batch_form_without_scores_is_bare_documents(server, retriever):
    status, body = post(server.url, {"queries": ["Marie Curie"], "topk": 2,
                                     "return_scores": False})
    assert status == 200
    assert body["result"] == expected(retriever, ["Marie Curie"], 2, scores=False)
    assert set(body["result"][0][0]) == {"id", "contents"}


def test_single_query_form_and_defaults(server, retriever):
    status, body = post(server.url, {"query": "river market harbour"})
    assert status == 200  # topk 3 and no scores by default, as in Search-R1
    assert body["result"] == expected(retriever, ["river market harbour"], 3, scores=False)
    status, body = post(server.url, {"query": "Chess", "topk": 1, "return_scores": True,
                                     "extra": "ignored"})
    assert status == 200 and body["result"][0][0]["document"]["id"] == "d13"


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        ({"topk": 3}, 400, "missing 'queries'"),
        ({"queries": "one string"}, 400, "'queries' must be a list of strings"),
        ({"queries": []}, 400, "'queries' is empty"),
        ({"queries": ["ok", 7]}, 400, "'queries'[1] must be a string"),
        ({"query": ["a list"]}, 400, "'query' must be a string"),
        ({"query": "a", "queries": ["b"]}, 400, "not both"),
        ({"query": "a", "topk": 0}, 400, "'topk' must be between 1 and 20, got 0"),
        ({"query": "a", "topk": 21}, 400, "'topk' must be between 1 and 20, got 21"),
        ({"query": "a", "topk": "3"}, 400, "'topk' must be an integer"),
        ({"query": "a", "topk": 2.5}, 400, "'topk' must be an integer"),
        ({"query": "a", "topk": True}, 400, "'topk' must be an integer"),
        ({"query": "a", "return_scores": "yes"}, 400, "'return_scores' must be true or false"),
        ({"queries": ["q"] * 9}, 413, "too many queries: 9"),
        (b"x" * 5000, 413, "larger than the limit of 4096 bytes"),
    ],
)
def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(server, body, status, message):
    got_status, got = post(server.url, body)
    assert got_status == status
    assert message in got["error"]
    ok, answer = post(server.url, {"query": "Cheetah", "topk": 1})
    assert ok == 200 and answer["result"][0][0]["id"] == "d0"


def test_oversized_chunked_body_is_rejected(server):
    async def send():
        async def chunks():
            for _ in range(10):
                yield b"x" * 1000

        async with aiohttp.ClientSession() as session:
            async with session.post(server.url + "/retrieve", data=chunks(),
                                    headers={"Content-Type": "application/json"}) as resp:
                return resp.status, await resp.json()

    status, body = asyncio.run(send())
    assert status == 413 and "4096 bytes" in body["error"]
    assert post(server.url, {"query": "Chess"})[0] == 200


@pytest.mark.parametrize(
    "path, method, status, message",
    [
        ("/nope", "GET", 404, "no such path '/nope'"),
        ("/retrieve/x", "POST", 404, "POST /retrieve"),
        ("/retrieve", "GET", 405, "method GET is not allowed on /retrieve; use POST"),
        ("/retrieve", "PUT", 405, "use POST"),
        ("/health", "POST", 405, "use GET"),
    ],
)
def test_unknown_paths_and_methods(server, path, method, status, message):
    got_status, got = post(server.url, b"{}" if method != "GET" else None, path=path,
                           method=method) if method != "GET" else get(server.url, path)
    assert got_status == status and message in got["error"]
    assert post(server.url, {"query": "Chess"})[0] == 200


def test_parse_request_unit():
    assert parse_request(b'{"queries": ["a", "b"], "topk": 5, "return_scores": true}',
                         max_queries=4, max_topk=10) == (["a", "b"], 5, True)
    assert parse_request(b'{"query": "a", "topk": null}', max_queries=4,
                         max_topk=10) == (["a"], 3, False)


async def _concurrent(url: str, bodies: list[dict]) -> list[dict]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(body):
            async with session.post(url + "/retrieve", json=body) as resp:
                assert resp.status == 200, await resp.text()
                return await resp.json()

        return await asyncio.gather(*(one(b) for b in bodies))


def test_64_concurrent_requests_each_get_their_own_results(server, retriever):
    base = [t for _, t, _ in TOPIC_DOCS] + ["river harbour", "castle farm", "zzz", "tower"]
    bodies = []
    for i in range(64):
        k = 1 + i % 5  # mixed topk: batched per topk
        n = 1 + i % 3  # and mixed numbers of queries per request
        qs = [base[(i + j) % len(base)] for j in range(n)]
        bodies.append({"queries": qs, "topk": k, "return_scores": i % 2 == 0})
    answers = asyncio.run(_concurrent(server.url, bodies))
    for body, answer in zip(bodies, answers):
        assert answer["result"] == expected(retriever, body["queries"], body["topk"],
                                            scores=body["return_scores"])


class SlowRetriever:
    """Wraps a retriever; each search takes at least ``delay`` seconds and is recorded."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.calls: list[tuple[int, int]] = []
        self.lock = threading.Lock()
        self.num_documents = inner.num_documents

    def search(self, queries, k):
        with self.lock:
            self.calls.append((len(queries), k))
        time.sleep(self.delay)
        return self.inner.search(queries, k)

    def close(self):
        pass


def test_concurrent_requests_are_batched(retriever):
    slow = SlowRetriever(retriever, delay=0.05)
    with BackgroundServer(slow) as s:
        queries = [f"{t} {i}" for i in range(4) for _, t, _ in TOPIC_DOCS][:64]
        bodies = [{"query": q, "topk": 3, "return_scores": True} for q in queries]
        answers = asyncio.run(_concurrent(s.url, bodies))
        assert [a["result"][0] for a in answers] == expected(retriever, queries, 3)
        assert sum(n for n, _ in slow.calls) == 64
        assert len(slow.calls) <= 8, slow.calls  # 64 requests, a handful of backend calls
        assert max(n for n, _ in slow.calls) >= 16
        health = get(s.url, "/health")[1]
        assert health["queries"] == 64 and health["batches"] == len(slow.calls)


def test_batch_window_and_max_batch(retriever):
    slow = SlowRetriever(retriever, delay=0.0)
    with BackgroundServer(slow, batch_window_ms=50, max_batch=10) as s:
        bodies = [{"query": t, "topk": 2} for _, t, _ in TOPIC_DOCS]
        answers = asyncio.run(_concurrent(s.url, bodies))
        assert [a["result"][0] for a in answers] == expected(
            retriever, [t for _, t, _ in TOPIC_DOCS], 2, scores=False)
        assert all(n <= 10 for n, _ in slow.calls)
        assert len(slow.calls) <= 4  # 24 queries in batches of at most 10


class FailingRetriever:
    num_documents = 0

    def __init__(self):
        self.fail = True

    def search(self, queries, k):
        if self.fail:
            raise RuntimeError("index file vanished")
        return [[] for _ in queries]

    def close(self):
        pass


def test_backend_failure_is_a_500_and_the_server_recovers():
    backend = FailingRetriever()
    with BackgroundServer(backend) as s:
        status, body = post(s.url, {"query": "a"})
        assert status == 500 and "index file vanished" in body["error"]
        backend.fail = False
        assert post(s.url, {"query": "a"}) == (200, {"result": [[]]})


def test_port_zero_picks_distinct_free_ports(retriever):
    with BackgroundServer(retriever) as a, BackgroundServer(retriever) as b:
        assert a.port != b.port and a.port > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serves_an_index_in_a_subprocess(index, retriever):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "creditgym.envs.retrieval.server", "--index", str(index),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, health = get(url, "/health")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.1)
        assert status == 200 and health["backend"] == "bm25s" and health["documents"] == 120
        status, body = post(url, {"queries": ["Apollo 11 moon landing"], "topk": 2,
                                  "return_scores": True})
        assert status == 200
        assert body["result"] == expected(retriever, ["Apollo 11 moon landing"], 2)
        assert post(url, b"oops")[0] == 400
        assert post(url, {"query": "Violin"})[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_server_over_lucene(small_corpus, tmp_path):
    lucene = pytest.importorskip("creditgym.envs.retrieval.lucene")
    pytest.importorskip("pyserini")
    from creditgym.errors import RetrievalError

    try:
        path = lucene.build_lucene_index(small_corpus, tmp_path / "lucene")
        lr = lucene.LuceneRetriever(path)
    except RetrievalError as exc:
        pytest.skip(str(exc))
    try:
        with BackgroundServer(lr) as s:
            bodies = [{"query": t, "topk": 3, "return_scores": True} for _, t, _ in TOPIC_DOCS]
            answers = asyncio.run(_concurrent(s.url, bodies))
            titles = [t for _, t, _ in TOPIC_DOCS]
            assert [a["result"][0] for a in answers] == expected(lr, titles, 3)
            assert [a["result"][0][0]["document"]["id"] for a in answers] == [
                d for d, _, _ in TOPIC_DOCS]
    finally:
        lr.close()
