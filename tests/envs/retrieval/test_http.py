"""The HTTP retrieval client against real servers on 127.0.0.1: round trips, retries, errors."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from aiohttp import web

from creditgym.envs.retrieval import RetrieverConfig, make_retriever
from creditgym.envs.retrieval.bm25 import BM25sRetriever, build_bm25s_index
from creditgym.envs.retrieval.http import HTTPRetriever, endpoint, parse_response
from creditgym.envs.retrieval.server import BackgroundServer
from creditgym.errors import RetrievalError

from .conftest import TOPIC_DOCS

TITLES = [t for _, t, _ in TOPIC_DOCS]


@pytest.fixture(scope="module")
def retriever(small_corpus, tmp_path_factory):
    r = BM25sRetriever(build_bm25s_index(small_corpus, tmp_path_factory.mktemp("h") / "idx"))
    yield r
    r.close()


@pytest.fixture(scope="module")
def server(retriever):
    with BackgroundServer(retriever) as s:
        yield s


class StubServer:
    """A scripted aiohttp server on its own thread: ``handler(request, n)`` answers call ``n``."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.calls = 0
        self.bodies: list[dict] = []

        async def retrieve(request: web.Request) -> web.StreamResponse:
            self.calls += 1
            self.bodies.append(await request.json())
            return await self.handler(request, self.calls)

        app = web.Application()
        app.router.add_post("/retrieve", retrieve)
        self._bg = _AppThread(app)

    @property
    def url(self) -> str:
        return self._bg.url

    def __enter__(self) -> StubServer:
        self._bg.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bg.stop()


class _AppThread:
    def __init__(self, app: web.Application) -> None:
        self.app, self.url = app, ""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

        async def setup():
            self.runner = web.AppRunner(self.app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return self.runner.addresses[0][1]

        port = asyncio.run_coroutine_threadsafe(setup(), self.loop).result(10)
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _ok_answer(queries):
    return {"result": [[{"document": {"id": f"x{i}", "contents": f'"T{i}"\n{q}'}, "score": 1.5}]
                       for i, q in enumerate(queries)]}


def test_round_trip_equals_direct_search(server, retriever):
    with HTTPRetriever(server.url) as client:
        queries = TITLES + ["fastest land animal", "river market", "xyzzy"]
        for k in (1, 3, 10):
            assert client.search(queries, k) == retriever.search(queries, k)
        assert client.search([], 3) == []


def test_large_batches_are_split_and_reassembled_in_order(server, retriever):
    with HTTPRetriever(server.url, batch_size=5, max_connections=3) as client:
        queries = TITLES * 3
        assert client.search(queries, 2) == retriever.search(queries, 2)


def test_asearch_from_a_running_loop_and_sync_search_inside_one(server, retriever):
    client = HTTPRetriever(server.url)

    async def main():
        a, b = await asyncio.gather(client.asearch(TITLES[:5], 3), client.asearch(TITLES[5:], 3))
        c = client.search(["Chess"], 1)  # blocks this loop but cannot deadlock
        return a + b, c

    try:
        both, single = asyncio.run(main())
        assert both == retriever.search(TITLES, 3)
        assert single[0][0].docid == "d13"
        # a second, separate event loop can use the same client
        assert asyncio.run(main())[1] == single
    finally:
        client.close()


def test_usable_from_many_threads(server, retriever):
    with HTTPRetriever(server.url) as client:
        results: dict[int, list] = {}

        def work(i):
            results[i] = client.search([TITLES[i]], 2)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(TITLES))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [results[i][0] for i in range(len(TITLES))] == [
            r for r in retriever.search(TITLES, 2)]


def test_4xx_fails_at_once_with_the_servers_message(server):
    with HTTPRetriever(server.url, retries=5, backoff=1.0) as client:
        t0 = time.monotonic()
        with pytest.raises(RetrievalError, match=r"HTTP 400.*'topk' must be between 1 and 100"):
            client.search(["Chess"], 1000)
        assert time.monotonic() - t0 < 1.0  # no retries, no backoff


def test_4xx_is_not_retried():
    async def reject(request, n):
        return web.json_response({"error": "bad thing"}, status=422)

    with StubServer(reject) as stub, HTTPRetriever(stub.url, retries=3) as client:
        with pytest.raises(RetrievalError, match="HTTP 422.*bad thing"):
            client.search(["q"], 1)
        assert stub.calls == 1


def test_5xx_is_retried_with_backoff_then_succeeds():
    async def flaky(request, n):
        if n <= 2:
            return web.json_response({"error": "overloaded"}, status=503)
        return web.json_response(_ok_answer((await request.json())["queries"]))

    with StubServer(flaky) as stub, HTTPRetriever(stub.url, retries=3, backoff=0.05) as client:
        t0 = time.monotonic()
        (hits,) = client.search(["hello"], 1)
        elapsed = time.monotonic() - t0
        assert stub.calls == 3
        assert elapsed >= 0.05 + 0.1 - 0.01  # backoff 0.05 then 0.1
        assert hits[0].docid == "x0" and hits[0].title == "T0" and hits[0].score == 1.5
        assert stub.bodies[0] == {"queries": ["hello"], "topk": 1, "return_scores": True}


def test_5xx_that_persists_names_the_url_and_attempts():
    async def down(request, n):
        return web.Response(status=502, text="bad gateway")

    with StubServer(down) as stub, HTTPRetriever(stub.url, retries=2, backoff=0.01) as client:
        with pytest.raises(RetrievalError) as err:
            client.search(["q"], 1)
        assert stub.calls == 3
        msg = str(err.value)
        assert stub.url + "/retrieve" in msg and "3 attempts" in msg and "HTTP 502" in msg


def test_timeouts_are_retried():
    async def slow_then_fast(request, n):
        if n == 1:
            await asyncio.sleep(1.0)
        return web.json_response(_ok_answer((await request.json())["queries"]))

    with StubServer(slow_then_fast) as stub, HTTPRetriever(stub.url, timeout=0.3, retries=1,
                                                          backoff=0.0) as client:
        assert client.search(["q"], 1)[0][0].docid == "x0"
        assert stub.calls == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return: nothing listens there


def test_nothing_listening_is_a_clear_error():
    port = _closed_port()
    with HTTPRetriever(f"127.0.0.1:{port}", retries=2, backoff=0.02) as client:
        t0 = time.monotonic()
        with pytest.raises(RetrievalError) as err:
            client.search(["q"], 3)
        msg = str(err.value)
        assert f"http://127.0.0.1:{port}/retrieve" in msg
        assert "unreachable after 3 attempts" in msg and "serve-retriever" in msg
        assert 0.06 - 0.01 <= time.monotonic() - t0 < 5  # waited 0.02 + 0.04


def test_bare_document_answers_parse_with_zero_scores():
    async def bare(request, n):
        qs = (await request.json())["queries"]
        return web.json_response({"result": [[{"id": "7", "title": "Ti", "text": "body"},
                                              {"id": "8", "contents": '"A"\nb'}] for _ in qs]})

    with StubServer(bare) as stub, HTTPRetriever(stub.url + "/retrieve") as client:
        (hits,) = client.search(["q"], 2)
        assert [(h.docid, h.title, h.text, h.score) for h in hits] == [
            ("7", "Ti", "body", 0.0), ("8", "A", "b", 0.0)]


def test_malformed_answers_raise():
    with pytest.raises(RetrievalError, match="2 result lists for 1 queries"):
        parse_response({"result": [[], []]}, 1)
    with pytest.raises(RetrievalError, match="no 'result' list"):
        parse_response({"detail": "x"}, 1)

    async def garbage(request, n):
        return web.Response(text="<html>", content_type="text/html")

    with StubServer(garbage) as stub, HTTPRetriever(stub.url) as client:
        with pytest.raises(RetrievalError, match="invalid JSON"):
            client.search(["q"], 1)


def test_endpoint_and_config():
    assert endpoint("localhost:8000") == "http://localhost:8000/retrieve"
    assert endpoint("http://h:1/retrieve/") == "http://h:1/retrieve"
    assert endpoint("https://h/api") == "https://h/api/retrieve"
    client = make_retriever(RetrieverConfig(backend="http", url="127.0.0.1:9", retries=0,
                                            timeout=2.0, batch_size=8))
    assert isinstance(client, HTTPRetriever)
    assert client.retries == 0 and client.timeout == 2.0 and client.batch_size == 8
    client.close()
    client.close()  # idempotent
    with pytest.raises(RetrievalError, match="closed"):
        client.search(["q"], 1)
    with pytest.raises(ValueError):
        HTTPRetriever("h:1", retries=-1)


def test_client_closes_its_thread(server):
    client = HTTPRetriever(server.url)
    client.search(["Chess"], 1)
    thread = client._thread
    assert thread is not None and thread.is_alive()
    client.close()
    assert not thread.is_alive()


def test_proxying_through_a_second_server(server, retriever):
    """`serve-retriever --backend http`: a server in front of a remote one."""
    with HTTPRetriever(server.url) as upstream, BackgroundServer(upstream) as proxy, \
            HTTPRetriever(proxy.url) as client:
        assert client.search(TITLES[:6], 3) == retriever.search(TITLES[:6], 3)


