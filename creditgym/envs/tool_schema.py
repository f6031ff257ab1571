"""Tool schemas and argument conversion: docstring parsing, JSON schemas of type hints, and
checking/converting model-supplied argument values.

``parse_docstring`` reads a Google-style ``Args:`` section or Sphinx ``:param x:`` lines;
``type_schema`` turns a type hint (``str``, ``int``, ``float``, ``bool``, ``list[...]``,
``dict``, ``Literal[...]``, ``Optional[...]``/``X | None``, other unions) into a JSON schema;
``convert_value`` converts an argument to a hint (``"3"`` -> ``3`` for an ``int``, ``"true"`` ->
``True`` for a ``bool``, ...) or raises ``ToolArgumentError`` with a message meant for the agent.
``creditgym.envs.tools`` builds ``Tool`` on top of these and re-exports them.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import types
import typing
from typing import Any

_NoneType = type(None)


class ToolArgumentError(ValueError):
    """Arguments that do not fit a tool's signature; the message is written for the agent."""


# ----------------------------------------------------------------------------- docstrings

_SECTION_RE = re.compile(
    r"^(args|arguments|parameters|params|returns?|yields?|raises|examples?|notes?|"
    r"attributes|see also|references|warnings?)\s*:?\s*$",
    re.IGNORECASE,
)
_ARG_LINE_RE = re.compile(r"^(\*{0,2}[A-Za-z_]\w*)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_RE = re.compile(r"^:param\s+(?:[^:]*\s)?([A-Za-z_]\w*)\s*:\s*(.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(first paragraph joined on one line, {argument: description}) from a docstring.

    Reads Google style (``Args:`` then ``name (type): text`` lines, continuation lines indented
    deeper) and Sphinx style (``:param name: text``).
    """
    lines = inspect.cleandoc(doc).splitlines() if doc else []
    summary_lines: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION_RE.match(line.strip()) or line.strip().startswith(":"):
            break
        summary_lines.append(line.strip())
    summary = " ".join(summary_lines)

    args: dict[str, str] = {}
    current: str | None = None
    in_args = False
    args_indent = arg_indent = 0
    for line in lines:
        stripped = line.strip()
        sphinx = _SPHINX_RE.match(stripped)
        if sphinx:
            current, in_args = sphinx.group(1), False
            args[current] = sphinx.group(2).strip()
            continue
        if _SECTION_RE.match(stripped):
            in_args = stripped.rstrip(":").strip().lower() in {
                "args", "arguments", "parameters", "params"
            }
            args_indent = len(line) - len(line.lstrip())
            current = None
            continue
        if not in_args:
            if current and stripped and not stripped.startswith(":") and line.startswith(" "):
                args[current] += " " + stripped  # sphinx continuation
            elif not stripped or stripped.startswith(":"):
                current = None
            continue
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= args_indent:  # dedent ends the section
            in_args, current = False, None
            continue
        m = _ARG_LINE_RE.match(stripped)
        if m and (current is None or indent <= arg_indent):
            current, arg_indent = m.group(1).lstrip("*"), indent
            args[current] = m.group(2).strip()
        elif current is not None:
            args[current] = (args[current] + " " + stripped).strip()
    return summary, args


# ----------------------------------------------------------------------------- schemas


def type_schema(annotation: Any) -> dict[str, Any]:
    """The JSON schema of one type hint; ``TypeError`` for hints with no JSON equivalent."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return {}
    if annotation is str:
        return {"type": "string"}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        return {"type": "number"}
    if annotation is _NoneType or annotation is None:
        return {"type": "null"}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset):
        schema: dict[str, Any] = {"type": "array"}
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            schema["items"] = type_schema(args[0])
        elif origin is tuple and args:
            schema["prefixItems"] = [type_schema(a) for a in args]
            schema["minItems"] = schema["maxItems"] = len(args)
        elif args:
            schema["items"] = type_schema(args[0])
        return schema
    if annotation is dict or origin is dict:
        schema = {"type": "object"}
        if len(args) == 2 and args[1] is not Any:
            schema["additionalProperties"] = type_schema(args[1])
        return schema
    if origin is typing.Literal:
        kinds = {_json_type(a) for a in args}
        schema = {"enum": list(args)}
        if len(kinds) == 1:
            schema["type"] = kinds.pop()
        return schema
    if origin in (typing.Union, types.UnionType):
        non_null = [a for a in args if a is not _NoneType]
        nullable = len(non_null) < len(args)
        if len(non_null) == 1:
            schema = type_schema(non_null[0])
        else:
            subs = [type_schema(a) for a in non_null]
            if all(set(s) == {"type"} and isinstance(s["type"], str) for s in subs):
                schema = {"type": [s["type"] for s in subs]}
            else:
                schema = {"anyOf": subs}
        if nullable:
            schema["nullable"] = True
        return schema
    raise TypeError(
        f"type hint {annotation!r} has no JSON schema; use str, int, float, bool, list[...], "
        "dict[str, ...], Literal[...] or Optional[...]"
    )


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if value is None:
        return "null"
    return "string"


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------- conversion

_INT_RE = re.compile(r"^[+-]?\d+$")


def convert_value(annotation: Any, value: Any) -> Any:
    """``value`` converted to ``annotation``; ``ToolArgumentError`` (phrased to follow
    "argument 'x' ...") when it does not fit."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return value
    if annotation is _NoneType or annotation is None:
        if value is None:
            return None
        raise ToolArgumentError(f"must be null, got {_short(value)}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ToolArgumentError(f"must be a string, got {_short(value)}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ToolArgumentError(f"must be true or false, got {_short(value)}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INT_RE.match(value.strip()) and len(value) < 4300:
            return int(value.strip())
        raise ToolArgumentError(f"must be an integer, got {_short(value)}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                f = float(value.strip())
            except ValueError:
                pass
            else:
                if math.isfinite(f):
                    return f
        raise ToolArgumentError(f"must be a number, got {_short(value)}")
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset):
        if not isinstance(value, (list, tuple)):
            raise ToolArgumentError(f"must be a list, got {_short(value)}")
        kind = origin or annotation
        if kind is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ToolArgumentError(f"must be a list of {len(args)} items, got {len(value)}")
            items = [_convert_item(a, v, i) for i, (a, v) in enumerate(zip(args, value))]
        else:
            item_type = args[0] if args else Any
            items = [_convert_item(item_type, v, i) for i, v in enumerate(value)]
        return kind(items) if kind in (tuple, set, frozenset) else items
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise ToolArgumentError(f"must be an object, got {_short(value)}")
        if len(args) == 2:
            return {
                convert_value(args[0], k) if args[0] is not str else k: _convert_item(args[1], v, k)
                for k, v in value.items()
            }
        return dict(value)
    if origin is typing.Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        for choice in args:
            if str(choice) == str(value) or (isinstance(value, str) and value.strip() == str(choice)):
                return choice
        raise ToolArgumentError(
            f"must be one of {', '.join(json.dumps(a) for a in args)}, got {_short(value)}"
        )
    if origin in (typing.Union, types.UnionType):
        if value is None and _NoneType in args:
            return None
        errors = []
        # Exact type matches first, so "3" stays a string in `int | str`.
        ordered = sorted(
            (a for a in args if a is not _NoneType),
            key=lambda a: 0 if isinstance(a, type) and type(value) is a else 1,
        )
        for option in ordered:
            try:
                return convert_value(option, value)
            except ToolArgumentError as exc:
                errors.append(str(exc))
        raise ToolArgumentError(" or ".join(dict.fromkeys(errors)))
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise ToolArgumentError(f"has unsupported type {annotation!r}")


def _convert_item(annotation: Any, value: Any, where: Any) -> Any:
    try:
        return convert_value(annotation, value)
    except ToolArgumentError as exc:
        raise ToolArgumentError(f"item {where!r} {exc}") from None


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    kind = "null" if value is None else type(value).__name__
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{kind} {text}" if value is not None else "null"
