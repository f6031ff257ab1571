"""The Search-R1 retriever protocol: validating ``POST /retrieve`` bodies and shaping answers.

Kept apart from the server so clients, tests and other servers can use the same rules: a request
is ``{"queries": [...], "topk": k, "return_scores": bool}`` or the single ``{"query": "..."}``;
an answer is ``{"result": [[{"document": {"id", "contents"}, "score": s}, ...], ...]}`` (a bare list
of documents per query without scores).
"""

from __future__ import annotations

from typing import Any

from creditgym.aio_server import BadRequest, parse_json
from creditgym.envs.retrieval.base import Hit
from creditgym.json_values import json_kind  # the one value-kind wording of both servers

DEFAULT_TOPK = 3
"""Search-R1's default number of passages per query."""


def parse_request(
    body: bytes, *, max_queries: int, max_topk: int
) -> tuple[list[str], int, bool]:
    """Validate a ``/retrieve`` body: (queries, topk, return_scores), or raise BadRequest."""
    payload = parse_json(body)  # 400 for invalid or too deeply nested JSON
    if not isinstance(payload, dict):
        raise BadRequest(
            f"request body must be a JSON object like {{\"queries\": [\"...\"], \"topk\": 3}}, "
            f"got a JSON {type(payload).__name__}"
        )
    has_many, has_one = "queries" in payload, "query" in payload
    if has_many and has_one:
        raise BadRequest(
            "give either 'queries' (a list of strings) or 'query' (a string), not both"
        )
    if has_many:
        queries = payload["queries"]
        if not isinstance(queries, list):
            raise BadRequest(f"'queries' must be a list of strings, got {json_kind(queries)}")
        if not queries:
            raise BadRequest("'queries' is empty; send at least one query")
        if len(queries) > max_queries:
            raise BadRequest(
                f"too many queries: {len(queries)} in one request, the limit is {max_queries}; "
                "split them over several requests",
                status=413,
            )
        for i, q in enumerate(queries):
            if not isinstance(q, str):
                raise BadRequest(f"'queries'[{i}] must be a string, got {json_kind(q)}")
    elif has_one:
        query = payload["query"]
        if not isinstance(query, str):
            raise BadRequest(f"'query' must be a string, got {json_kind(query)}")
        queries = [query]
    else:
        raise BadRequest(
            "missing 'queries': send {\"queries\": [\"...\"], \"topk\": 3, "
            "\"return_scores\": true} or {\"query\": \"...\"}"
        )
    topk = payload.get("topk")
    if topk is None:
        topk = DEFAULT_TOPK
    elif isinstance(topk, bool) or not isinstance(topk, int):
        raise BadRequest(f"'topk' must be an integer, got {json_kind(topk)}")
    elif not 1 <= topk <= max_topk:
        raise BadRequest(f"'topk' must be between 1 and {max_topk}, got {topk}")
    scores = payload.get("return_scores")
    if scores is None:
        scores = False
    elif not isinstance(scores, bool):
        raise BadRequest(f"'return_scores' must be true or false, got {json_kind(scores)}")
    return queries, topk, scores


def format_result(hits: list[list[Hit]], return_scores: bool) -> dict[str, Any]:
    """The Search-R1 response body for ``hits``."""
    if return_scores:
        result = [
            [{"document": {"id": h.docid, "contents": h.contents}, "score": h.score} for h in row]
            for row in hits
        ]
    else:
        result = [[{"id": h.docid, "contents": h.contents} for h in row] for row in hits]
    return {"result": result}
