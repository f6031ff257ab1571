"""Server hardening shared by both servers (creditgym.aio_server): stalled clients, the connection
cap, Host and Content-Type checks, deep JSON, quiet logs, SIGTERM. Real servers on 127.0.0.1 with
a real bm25s index; raw sockets play the stalled clients."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from creditgym.aio_connections import RateLimitedLog
from creditgym.aio_server import (
    BadRequest,
    ServerSettings,
    add_shutdown_hook,
    parse_json,
    settings_from_args,
)
from creditgym.envs.retrieval.bm25 import BM25sRetriever, build_bm25s_index
from creditgym.envs.retrieval.http import HTTPRetriever
from creditgym.envs.retrieval.server import BackgroundServer, make_app

ROOT = Path(__file__).parents[1]
STALL_HEADERS = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
STALL_BODY = (b"POST /retrieve HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: 1000\r\n\r\n")
FAST = ServerSettings(header_timeout=0.3, body_timeout=0.3, keepalive_timeout=5)


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("aio")
    corpus = folder / "corpus.jsonl"
    docs = [{"id": f"d{i}", "contents": f'"Title {i}"\nthe apple number {i} grows'}
            for i in range(12)]
    corpus.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    return build_bm25s_index(corpus, folder / "idx")


@pytest.fixture(scope="module")
def retriever(index):
    r = BM25sRetriever(index)
    yield r
    r.close()


def request(url: str, body: bytes | None = None, headers: dict | None = None, method=None):
    """(status, parsed JSON answer) of one real HTTP request."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def stalled(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(data)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bytes:
    """What the server sent before closing ``sock``; fails if it is still open after ``seconds``."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except ConnectionResetError:  # closed with unread data: a reset is a close too
        pass
    return got


JSON = {"Content-Type": "application/json"}


def test_stalled_headers_and_bodies_are_dropped(retriever):
    with BackgroundServer(retriever, settings=FAST) as server:
        silent = stalled(server.port, b"")
        half_headers = stalled(server.port, STALL_HEADERS)
        half_body = stalled(server.port, STALL_BODY)
        assert closed_within(silent, 5) == b""
        assert closed_within(half_headers, 5) == b""
        answer = closed_within(half_body, 5)
        assert answer.startswith(b"HTTP/1.1 408") and b"request body stalled" in answer
        assert server.guard.counts["header_timeouts"] >= 2
        assert request(server.url + "/health")[0] == 200  # and it keeps serving


def test_health_answers_while_stalled_connections_fill_the_cap(retriever):
    settings = ServerSettings(max_connections=16)  # default timeouts: the stalled ones stay
    with BackgroundServer(retriever, settings=settings) as server:
        socks = [stalled(server.port, STALL_HEADERS if i % 2 else STALL_BODY) for i in range(60)]
        status, health = request(server.url + "/health")
        assert status == 200 and health["status"] == "ok"
        assert server.guard.counts["evicted"] >= 60 - 16
        assert server.guard.open_connections <= 16
        assert closed_within(socks[0], 5) == b""  # the oldest stalled one made room
        for sock in socks:
            sock.close()


def test_host_check_blocks_dns_rebinding_unless_allowed(retriever):
    with BackgroundServer(retriever, settings=ServerSettings(allowed_hosts=("my.lan",))) as server:
        health = server.url + "/health"
        status, body = request(health, headers={"Host": "evil.example"})
        assert status == 403 and "--allow-host evil.example" in body["error"]
        for host in (f"localhost:{server.port}", "127.0.0.1", f"[::1]:{server.port}", "my.lan:80"):
            assert request(health, headers={"Host": host})[0] == 200, host
    with BackgroundServer(retriever, settings=ServerSettings(allowed_hosts=("*",))) as server:
        assert request(server.url + "/health", headers={"Host": "evil.example"})[0] == 200


@pytest.mark.parametrize("ctype", ["application/x-www-form-urlencoded", "text/plain", None])
def test_posts_must_be_json(retriever, ctype):
    with BackgroundServer(retriever) as server:
        body = b'{"query": "apple"}'
        if ctype is None:  # urllib would add a form type: send the request by hand
            sock = stalled(server.port, b"POST /retrieve HTTP/1.1\r\nHost: localhost\r\n"
                           b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            assert closed_within(sock, 5).startswith(b"HTTP/1.1 415")
            return
        status, answer = request(server.url + "/retrieve", body, {"Content-Type": ctype})
        assert status == 415 and "application/json" in answer["error"]
        utf8_json = {"Content-Type": "application/json; charset=utf-8"}
        status, _ = request(server.url + "/retrieve", body, utf8_json)
        assert status == 200


def test_deep_json_is_a_400_and_the_server_keeps_serving(retriever, caplog):
    with BackgroundServer(retriever) as server, caplog.at_level(logging.WARNING):
        url = server.url + "/retrieve"
        status, body = request(url, b"[" * 100_000 + b"]" * 100_000, JSON)
        assert status == 400 and "levels deep" in body["error"]
        status, body = request(url, b'{"query": ' + b"[" * 40 + b"]" * 40 + b"}", JSON)
        assert status == 400 and "levels deep" in body["error"]
        assert request(url, b'{"query": "apple"}', JSON)[0] == 200
    refusals = [r for r in caplog.records if "levels deep" in r.getMessage()]
    assert len(refusals) == 2 and all(r.exc_info is None for r in refusals)  # no tracebacks


def test_parse_json_depth_limit():
    assert parse_json(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', max_depth=3) == {
        "a": "[" * 46
    }
    assert parse_json(b"[" * 3 + b"]" * 3, max_depth=3) == [[[]]]
    with pytest.raises(BadRequest, match="more than 3 levels"):
        parse_json(b"[" * 4 + b"]" * 4, max_depth=3)
    with pytest.raises(BadRequest, match="more than 3 levels"):
        parse_json(b'[{"a": [[]]}, []]', max_depth=3)
    with pytest.raises(BadRequest, match="not valid JSON"):
        parse_json(b"[" * 10 + b"}" * 10, max_depth=3)


def test_rate_limited_log_summarises_a_flood(caplog):
    now = [0.0]
    quiet = RateLimitedLog(logging.getLogger("creditgym.test.flood"), per_second=10,
                           clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="creditgym.test.flood"):
        for i in range(800):
            quiet.warning("bad request %d", i)
        now[0] = 1.5
        quiet.exception("Error handling request", exc_info=BadHttpMessage("bad header"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 12
    assert lines[10] == "suppressed 790 similar lines in the last 1.5 s"
    assert lines[11] == "Error handling request: bad header"
    assert caplog.records[11].exc_info is None  # the client's fault: no traceback


def test_shutdown_hooks_run_and_clients_keep_working(retriever):
    calls = []

    class Hooked(BackgroundServer):
        def _build_app(self) -> web.Application:
            app = make_app(self.retriever)
            add_shutdown_hook(app, lambda: calls.append("sync"))

            async def cancel_work() -> None:
                calls.append("async")

            add_shutdown_hook(app, cancel_work)
            return app

    with Hooked(retriever) as server:
        with HTTPRetriever(server.url, retries=0) as client:  # sends JSON and a proper Host
            assert client.search(["apple number 3"], 1)[0][0].docid == "d3"
        assert calls == []
    assert calls == ["sync", "async"]


def test_cli_options_reach_the_settings():
    from creditgym.cli import build_parser

    args = build_parser().parse_args(
        ["serve-retriever", "--allow-host", "a.lan", "--allow-host", "b.lan",
         "--header-timeout", "2", "--max-connections", "100"]
    )
    settings = settings_from_args(args)
    assert settings.allowed_hosts == ("a.lan", "b.lan")
    assert settings.header_timeout == 2 and settings.connection_cap == 100
    args = build_parser().parse_args(["serve-policy", "--model", "m", "--allow-host", "*"])
    assert settings_from_args(args).allowed_hosts == ("*",)


def test_one_bad_request_type_for_both_servers():
    from creditgym.agents.policy_protocol import BadRequest as PolicyBadRequest
    from creditgym.envs.retrieval.protocol import BadRequest as RetrievalBadRequest

    assert PolicyBadRequest is BadRequest is RetrievalBadRequest


def test_sigterm_exits_quickly_with_stalled_clients(index):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "creditgym.cli", "serve-retriever", "--index", str(index),
         "--backend", "bm25s", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )
    socks = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert request(f"http://127.0.0.1:{port}/health")[0] == 200
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.1)
        socks = [stalled(port, STALL_BODY), stalled(port, STALL_HEADERS)]
        time.sleep(0.3)  # the stalled body's handler is waiting for it
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        assert time.monotonic() - start < 15
    finally:
        for sock in socks:
            sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
