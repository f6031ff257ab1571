"""Tool calls out of action text, in the two syntaxes environments speak.

XML (Search-R1 style): ``<search>who wrote Hamlet</search>``, ``<answer>Shakespeare</answer>``.
Each tool is a tag named after it; the tag's content (whitespace-stripped) becomes the value of
the tool's one XML argument (``arg_names`` maps tool name -> argument name; a tool without
parameters takes an empty tag). Only tags named after known tools count, so other markup in the
text (``<b>``, a quoted ``<information>``) is left alone. A same-named opening tag inside a call
is taken as prose: ``I will <search> now. <search>q</search>`` is the call ``q``.

JSON (Hermes/Qwen chat-template style): ``<tool_call>{"name": "search", "arguments": {"query":
"..."}}</tool_call>``. ``arguments`` may also be a JSON-encoded string (the OpenAI wire form) or
be spelled ``parameters`` (Llama); a missing one means ``{}``. A final ``<tool_call>`` left
unclosed still counts when its body is complete JSON (generation often stops on
``</tool_call>`` and drops it).

In both, reasoning is removed first: every ``<think>...</think>`` block, an unclosed ``<think>``
to the end of the text, and, when the text has a ``</think>`` with no opening tag before it (chat
templates that open the think block in the prompt), everything up to that ``</think>``.

Both parsers return every call they find, in order, or a ``ParseError`` whose message is written
for the agent. They never raise. How many calls a turn may hold is the environment's rule
(``ToolEnvConfig.max_calls_per_turn``), not the parser's: Search-R1 generation stops at the first
closing tag, so with stop strings an action holds one call anyway, and without them a second call
is reported as an invalid action rather than silently dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_OPEN_TAG_RE = re.compile(r"<([A-Za-z_][\w\-]{0,63})>")
_CLOSE_TAG_RE = re.compile(r"</[A-Za-z_][\w\-]{0,63}>")
_NOT_CALLS = frozenset({"think", "information", "result", "tool_response", "error"})


@dataclass(frozen=True)
class ToolCall:
    """One parsed call: the tool's name, its (not yet validated) arguments, and the raw text."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    raw: str = ""


@dataclass(frozen=True)
class ParseError:
    """Why no call could be read from the action; ``message`` is meant for the agent."""

    message: str


def strip_think(text: str) -> str:
    """``text`` without its reasoning (see the module docstring for the rules)."""
    close = text.find("</think>")
    open_ = text.find("<think>")
    if close != -1 and (open_ == -1 or open_ > close):
        text = text[close + len("</think>"):]
    parts, pos = [], 0
    while True:
        start = text.find("<think>", pos)
        if start == -1:
            parts.append(text[pos:])
            break
        parts.append(text[pos:start])
        end = text.find("</think>", start)
        if end == -1:  # unclosed: reasoning to the end
            break
        parts.append(" ")
        pos = end + len("</think>")
    return "".join(parts)


def has_think(text: str) -> bool:
    """Whether the action contains reasoning (a ``<think>`` block or a closing ``</think>``)."""
    return "</think>" in text or "<think>" in text


def parse_xml_calls(
    text: str,
    tool_names: Iterable[str],
    *,
    arg_names: Mapping[str, str | None] | None = None,
) -> list[ToolCall] | ParseError:
    """Calls written as ``<name>content</name>`` for the tools in ``tool_names``.

    ``arg_names[name]`` is the argument a tag's content fills (default ``"input"``); ``None``
    marks a tool without parameters, whose tag must be empty.
    """
    names = [n for n in dict.fromkeys(tool_names)]
    if not names:
        return ParseError("no tools are available")
    arg_names = arg_names or {}
    body = strip_think(text)
    alternation = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    # Content may not contain another opening tag of the same tool (tempered token).
    call_re = re.compile(rf"<({alternation})>((?:(?!<\1>).)*?)</\1>", re.DOTALL)
    calls: list[ToolCall] = []
    for m in call_re.finditer(body):
        name, content = m.group(1), m.group(2).strip()
        arg = arg_names.get(name, "input")
        if arg is None:
            if content:
                return ParseError(f"<{name}> takes no input; write <{name}></{name}>")
            arguments: dict[str, Any] = {}
        else:
            arguments = {arg: content}
        calls.append(ToolCall(name=name, arguments=arguments, raw=m.group(0)))
    if calls:
        return calls
    forms = _xml_forms(names, arg_names)
    for name in names:
        if f"<{name}>" in body:
            return ParseError(f"the <{name}> tag is not closed; write {forms[name]}")
    if "<tool_call>" in body:
        return ParseError(
            "tool calls here are XML tags, not <tool_call> JSON; write one of: "
            + ", ".join(forms.values())
        )
    seen: set[str] = set()
    for m in _OPEN_TAG_RE.finditer(body):
        tag = m.group(1)
        if tag in seen or tag in _NOT_CALLS:
            continue
        seen.add(tag)
        if body.find(f"</{tag}>", m.end()) != -1:
            return ParseError(
                f"unknown tool <{tag}>; the available ones are: " + ", ".join(forms.values())
            )
    return ParseError("no tool call found; write one of: " + ", ".join(forms.values()))


def _xml_forms(names: list[str], arg_names: Mapping[str, str | None]) -> dict[str, str]:
    forms = {}
    for n in names:
        arg = arg_names.get(n, "input")
        forms[n] = f"<{n}></{n}>" if arg is None else f"<{n}>{arg}</{n}>"
    return forms


_JSON_FORM = '<tool_call>{"name": "TOOL", "arguments": {...}}</tool_call>'


def parse_json_calls(text: str) -> list[ToolCall] | ParseError:
    """Calls written as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``."""
    body = strip_think(text)
    spans: list[tuple[str, str]] = []
    pos = 0
    while True:
        start = body.find("<tool_call>", pos)
        if start == -1:
            break
        end = body.find("</tool_call>", start)
        if end == -1:  # unclosed: counts when it is the last and holds complete JSON
            tail = body[start + len("<tool_call>"):]
            if _loads(tail.strip()) is not None or not spans:
                spans.append((tail, body[start:]))
            break
        # A nested opening (``<tool_call><tool_call>{...}</tool_call>``) starts the call.
        inner_start = body.rfind("<tool_call>", start, end)
        spans.append((body[inner_start + len("<tool_call>"):end], body[inner_start:end + 12]))
        pos = end + len("</tool_call>")
    if not spans:
        if _CLOSE_TAG_RE.search(body):
            return ParseError(
                "no <tool_call> found (tool calls here are JSON inside <tool_call> tags); "
                f"write {_JSON_FORM}"
            )
        return ParseError(f"no tool call found; write {_JSON_FORM}")
    calls: list[ToolCall] = []
    for inner, raw in spans:
        parsed = _loads(inner.strip())
        if parsed is None:
            try:
                json.loads(inner.strip())
            except (json.JSONDecodeError, RecursionError, ValueError) as exc:
                msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                where = (
                    f" at line {exc.lineno} column {exc.colno}"
                    if isinstance(exc, json.JSONDecodeError)
                    else ""
                )
                return ParseError(f"the <tool_call> body is not valid JSON ({msg}{where}); "
                                  f"write {_JSON_FORM}")
            return ParseError(f"the <tool_call> body is not valid JSON; write {_JSON_FORM}")
        value = parsed[0]
        if not isinstance(value, dict):
            return ParseError(f"the <tool_call> body must be a JSON object; write {_JSON_FORM}")
        name = value.get("name")
        if not isinstance(name, str) or not name:
            return ParseError(f'the <tool_call> object needs a "name" string; write {_JSON_FORM}')
        extra = set(value) - {"name", "arguments", "parameters", "id", "type"}
        if extra:
            return ParseError(
                f"unexpected key(s) {', '.join(sorted(map(repr, extra)))} in <tool_call>; "
                f"write {_JSON_FORM}"
            )
        arguments = value.get("arguments", value.get("parameters", {}))
        if isinstance(arguments, str):
            decoded = _loads(arguments) if arguments.strip() else ({},)
            if decoded is None or not isinstance(decoded[0], dict):
                return ParseError(
                    f'"arguments" of {name} must be a JSON object; write {_JSON_FORM}'
                )
            arguments = decoded[0]
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return ParseError(f'"arguments" of {name} must be a JSON object; write {_JSON_FORM}')
        calls.append(ToolCall(name=name, arguments=arguments, raw=raw))
    return calls


def _loads(text: str) -> tuple[Any] | None:
    """``(value,)`` when ``text`` is one JSON value, else ``None`` (never raises)."""
    try:
        return (json.loads(text),)
    except (json.JSONDecodeError, RecursionError, ValueError):
        return None
