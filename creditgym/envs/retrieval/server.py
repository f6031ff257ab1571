"""The retrieval server: any backend over HTTP, speaking the Search-R1 retriever protocol.

``POST /retrieve`` with ``{"queries": ["q1", ...], "topk": 3, "return_scores": true}`` (or the
single form ``{"query": "q1", ...}``) answers ``{"result": [[{"document": {"id": ...,
"contents": "\\"Title\\"\\nbody"}, "score": 12.3}, ...], ...]}``: one list per query, best first.
With ``"return_scores": false`` (the default, as in Search-R1) each query's list holds the bare
documents. ``topk`` defaults to 3. Keys other than these are ignored, as Search-R1's server
ignores them. ``GET /health`` answers ``{"status": "ok", "backend": ..., "documents": N}``.

Access and limits (:mod:`creditgym.aio_server`): only requests addressed to localhost,
127.0.0.1, [::1] or the bound address are answered (403 otherwise; ``--allow-host NAME``,
repeatable, exposes the server deliberately), POST bodies must be ``application/json`` (415),
clients that stall while sending headers or body are dropped after ``--header-timeout`` /
``--body-timeout`` seconds (408 for a body), open connections are capped (stalled ones evicted
first), and SIGTERM ends the server within seconds.

Every malformed request (body not JSON, wrong types, ``topk`` out of range, too many queries, a
body over the size limit, an unknown path or method) gets a 4xx answer ``{"error": "..."}`` that
says what is wrong, and the server keeps serving. Any query string is served: lone surrogates,
control characters, empty or punctuation-only text and Lucene syntax are normalised or matched
as plain words (an empty query gets an empty list), and Lucene keeps a query's first
``maxClauseCount`` (1,024) distinct terms (see ``query_text.py`` and ``lucene.py``), so client
text never causes a 500. A failing backend gives 500 with the error, to the failing request
only: a batch whose backend call raises is retried request by request.

Throughput comes from batching: queries from concurrent requests wait in a queue per ``topk``
while the backend works on the previous batch, then go to the backend together as one
``search(queries, k)`` call in a worker thread (Lucene and numpy release the GIL there), so the
more requests arrive at once, the more queries each backend call serves. With no load a request
is dispatched at once (``batch_window_ms`` adds a deliberate wait; 0 by default). Nothing is
logged per request.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from creditgym.aio_server import (
    BackgroundAppServer,
    BadRequest,  # noqa: F401  (re-exported: creditgym.envs.retrieval.server.BadRequest)
    ServerSettings,
    add_server_arguments,
    json_app,
    json_body,
    read_body,
    serve_app,
    settings_from_args,
)
from creditgym.envs.retrieval.base import Retriever
from creditgym.envs.retrieval.protocol import DEFAULT_TOPK, format_result, parse_request  # noqa: F401  (re-exported)
from creditgym.envs.retrieval.server_batcher import Batcher  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


_RETRIEVER_KEY = web.AppKey("retriever", object)
_BATCHER_KEY = web.AppKey("batcher", object)


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    """An error answer in Search-R1 servers' plain form (``param`` is not reported)."""
    return web.json_response({"error": message}, status=status)


def make_app(
    retriever: Retriever,
    *,
    max_queries: int = 512,
    max_topk: int = 100,
    max_body_bytes: int = 1 << 20,
    max_batch: int = 256,
    batch_window_ms: float = 0.0,
    workers: int = 1,
    backend_name: str | None = None,
) -> web.Application:
    """The aiohttp application serving ``retriever``.

    ``max_queries``: queries per request; ``max_topk``: largest ``topk``; ``max_body_bytes``:
    largest request body; ``max_batch``: most queries in one backend call; ``batch_window_ms``:
    how long an idle server waits for more requests before calling the backend; ``workers``:
    backend calls that may run at once. The app does not close ``retriever``.
    """
    batcher = Batcher(
        retriever, max_batch=max_batch, batch_window_ms=batch_window_ms, workers=workers
    )
    name = backend_name or type(retriever).__name__
    documents = getattr(retriever, "num_documents", None)
    if documents is None:
        documents = getattr(retriever, "num_docs", None)

    async def retrieve(request: web.Request) -> web.Response:
        body = await read_body(request, max_body_bytes)
        queries, topk, scores = parse_request(body, max_queries=max_queries, max_topk=max_topk)
        return json_body(format_result(await batcher.search(queries, topk), scores))

    async def health(request: web.Request) -> web.Response:
        body: dict[str, Any] = {"status": "ok", "backend": name}
        if documents is not None:
            body["documents"] = documents
        body["batches"] = batcher.batches
        body["queries"] = batcher.queries
        return web.json_response(body)

    async def on_cleanup(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, batcher.close)

    app = json_app(
        _error,
        max_body_bytes=max_body_bytes,
        routes="POST /retrieve and GET /health",
        failure="retrieval failed",
        logger=log,
    )
    app[_RETRIEVER_KEY] = retriever
    app[_BATCHER_KEY] = batcher
    app.router.add_post("/retrieve", retrieve)
    app.router.add_get("/health", health)
    app.on_cleanup.append(on_cleanup)
    return app


class BackgroundServer(BackgroundAppServer):
    """Runs :func:`make_app` on its own event loop thread: for tests, benchmarks and notebooks.

    ``port=0`` picks a free port; ``url`` is the base URL once started; ``settings`` (timeouts,
    connection cap, allowed hosts) as for :func:`serve`. Use as a context manager or call
    ``start()`` / ``stop()``. The retriever is not closed.
    """

    thread_name = "retrieval-server"

    def __init__(
        self,
        retriever: Retriever,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: ServerSettings | None = None,
        **app_options: Any,
    ) -> None:
        super().__init__(host, port, settings)
        self.retriever = retriever
        self.app_options = app_options

    def _build_app(self) -> web.Application:
        return make_app(self.retriever, **self.app_options)


def serve(
    retriever: Retriever,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServerSettings | None = None,
    **app_options: Any,
) -> None:
    """Serve ``retriever`` until SIGTERM/SIGINT (blocking). Binds loopback unless told otherwise;
    ``settings``: timeouts, connection cap and allowed ``Host`` names (see creditgym.aio_server)."""
    app = make_app(retriever, **app_options)
    banner = f"creditgym retrieval server on http://{host}:{port} (POST /retrieve, GET /health)"
    serve_app(app, host, port, banner, settings)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``creditgym serve-retriever`` (shared with ``python -m`` of this module)."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--index", help="index directory; its backend is detected when "
                        "--backend is not given")
    parser.add_argument("--backend", choices=["lucene", "bm25s", "dense", "http"],
                        help="retrieval backend (default: detected from --index)")
    parser.add_argument("--corpus", help="wiki-18 JSONL corpus: build --index from it if missing")
    parser.add_argument("--url", help="upstream server for --backend http")
    parser.add_argument("--threads", type=int, default=2, help="Lucene search threads")
    parser.add_argument("--max-queries", type=int, default=512, help="queries per request")
    parser.add_argument("--max-topk", type=int, default=100, help="largest topk")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest body")
    parser.add_argument("--max-batch", type=int, default=256, help="queries per backend call")
    parser.add_argument("--batch-window-ms", type=float, default=0.0,
                        help="wait this long for more requests before an idle backend call")
    parser.add_argument("--workers", type=int, default=1, help="backend calls run at once")
    add_server_arguments(parser)  # --allow-host, timeouts, --max-connections


def run_from_args(args: argparse.Namespace) -> None:
    """Open the retriever the options name and serve it (``creditgym serve-retriever``)."""
    from creditgym.envs.retrieval import (
        RetrieverConfig,
        build_index,
        detect_backend,
        make_retriever,
    )

    backend = args.backend
    if args.corpus and args.index and not Path(args.index).exists():
        build_index(backend or "lucene", args.corpus, args.index, threads=args.threads)
    if backend is None:
        if args.url and not args.index:
            backend = "http"
        elif args.index:
            backend = detect_backend(args.index)
        else:
            raise SystemExit("serve-retriever: give --index PATH (and/or --backend), or --url")
    config = RetrieverConfig(backend=backend, index=args.index, url=args.url, threads=args.threads)
    retriever = make_retriever(config)
    try:
        serve(
            retriever,
            host=args.host,
            port=args.port,
            max_queries=args.max_queries,
            max_topk=args.max_topk,
            max_body_bytes=args.max_body_bytes,
            max_batch=args.max_batch,
            batch_window_ms=args.batch_window_ms,
            workers=args.workers,
            backend_name=backend,
            settings=settings_from_args(args),
        )
    finally:
        retriever.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="creditgym serve-retriever", description="Serve a retrieval backend over HTTP "
        "(Search-R1 protocol: POST /retrieve, GET /health)."
    )
    add_arguments(parser)
    run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
