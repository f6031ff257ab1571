"""Query text normalisation shared by every retrieval backend, the batchers and the server.

Queries come from a policy (an LLM) or from HTTP clients, so they can hold anything Python's
``str`` can: lone UTF-16 surrogates (``"\\ud800"``, valid JSON, but no codec outside Python
accepts them: pyjnius, tokenizers and UTF-8 encoders all raise), control characters, or nothing
at all. :func:`normalize_query` turns any string into one every backend accepts:

- a surrogate pair held as two code points becomes the character it encodes; a lone surrogate
  becomes U+FFFD (the replacement character);
- control characters other than tab, newline and carriage return become spaces (no analyzer
  treats them as part of a word, so this never changes which words a query holds);
- everything else, empty and whitespace-only queries included, is kept as it is: a query with
  no searchable word is not an error, every backend answers it with an empty hit list.

A query that is not a string cannot be normalised and raises ``TypeError`` naming its position.
The function is idempotent and costs one regex scan for ordinary text. Backend-specific limits
(Lucene's ``maxClauseCount``) are applied by the backend itself, see ``lucene.py``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_NEEDS_WORK = re.compile(r"[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def normalize_query(query: str) -> str:
    """``query`` with lone surrogates replaced and control characters blanked (see module doc)."""
    if not isinstance(query, str):
        raise TypeError(f"a search query must be a string, got {type(query).__name__}")
    if _NEEDS_WORK.search(query) is None:
        return query
    if _SURROGATE.search(query) is not None:
        # UTF-16 round trip: paired surrogates become their character, lone ones U+FFFD.
        query = query.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return _CONTROL.sub(" ", query)


def normalize_queries(queries: Sequence[str]) -> list[str]:
    """:func:`normalize_query` of each query; ``TypeError`` for a lone string or a non-string."""
    if isinstance(queries, (str, bytes)):
        raise TypeError("search() takes a list of queries; wrap a single query in a list")
    out = []
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise TypeError(
                f"queries[{i}] must be a string, got {type(q).__name__} ({q!r:.40}); "
                "pass the query text"
            )
        out.append(normalize_query(q))
    return out


__all__ = ["normalize_queries", "normalize_query"]
