"""JSON values: the one conversion of Python data to plain JSON/YAML data, and the one way a
server's error message names the kind of value a client sent.

- :func:`to_plain` turns configs (dataclasses), records, numpy and torch values, paths, tuples
  and sets into dicts, lists, strings, numbers, booleans and None: what ``json.dumps`` and
  ``yaml.safe_dump`` accept. Every writer of JSON or YAML in creditgym goes through it.
- :func:`json_kind` describes a decoded JSON value for a 400 message (``a string ("x")``); both
  HTTP servers (``serve-retriever``, ``serve-policy``) use it.
- :func:`parse_json`: a request body decoded as JSON, or a ``BadRequest`` (400) when it is not
  JSON or nests deeper than ``MAX_JSON_DEPTH`` (checked at C speed, so a 100k-deep body cannot
  reach the recursion limit).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from pathlib import PurePath
from typing import Any

import numpy as np

from creditgym.errors import BadRequest

_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
          int: "an integer", float: "a number", type(None): "null"}


def to_plain(value: Any, *, strict: bool = False) -> Any:
    """A plain JSON/YAML-ready copy of ``value``: dataclass instances and mappings become dicts
    (keys as strings), tuples, lists and sets lists, numpy/torch arrays and scalars their
    ``tolist()``/``item()``, paths and enums their text or value. Any other object becomes its
    ``str``, or with ``strict`` raises ``TypeError`` naming its type (for data that must come
    back as it went in, such as a checkpoint's ``extra``)."""
    if isinstance(value, enum.Enum):  # before str/int: a StrEnum is a str
        return to_plain(value.value, strict=strict)
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, np.generic):  # before int/float: np.float64 subclasses float
        return value.item()
    if isinstance(value, (int, float)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name), strict=strict)
                for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_plain(v, strict=strict) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v, strict=strict) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [to_plain(v, strict=strict) for v in value]
        try:  # a set has no order: sort so that equal sets write equal files
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, PurePath):
        return str(value)
    tolist = getattr(value, "tolist", None)  # numpy arrays, torch tensors
    if callable(tolist):
        return to_plain(tolist(), strict=strict)
    if strict:
        raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
    return str(value)


def json_kind(value: Any) -> str:
    """What kind of JSON value ``value`` is, with its text cut to 40 characters:
    ``an integer (5)``, ``a string ("x")``, ``null (null)``."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{_KINDS.get(type(value), type(value).__name__)} ({text})"




MAX_JSON_DEPTH = 32
"""Deepest JSON nesting a request body may have (real requests nest 2 or 3 levels)."""

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_ONE_BRACKET = bytes.maketrans(b"{}", b"[]")


def _deeper_than(body: bytes, limit: int) -> bool:
    """Whether ``body`` (balanced JSON) nests more than ``limit`` levels; C-speed passes only."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(_ONE_BRACKET, _NOT_BRACKETS)
    if b"[" * (limit + 1) in brackets:
        return True
    for _ in range(limit):  # each pass removes the innermost pairs: one level
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


def parse_json(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``body`` decoded as JSON, or :class:`BadRequest` (400) saying why it is not acceptable."""
    too_deep = _deeper_than(body, max_depth)
    deep = BadRequest(
        f"request body nests JSON more than {max_depth} levels deep; send a flatter body"
    )
    try:
        payload = json.loads(body)
    except RecursionError:
        raise deep from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if too_deep:
        raise deep
    return payload


__all__ = ["MAX_JSON_DEPTH", "json_kind", "parse_json", "to_plain"]
