"""From an action to the tool calls an environment will run: the rules of ``ToolEnv``'s turn.

``read_action`` applies, in order: the action must be text (bytes are decoded as UTF-8); it is
parsed in the environment's syntax (``creditgym.envs.parsing``); a turn holds at most
``max_calls_per_turn`` calls; every call names a known tool; the answer tool is the only call of
its turn; and every call's arguments fit its tool (``Tool.validate``, which also converts them).
The first rule broken makes the action invalid, with a message written for the agent; nothing
here raises for any action.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from creditgym.envs.parsing import ParseError, ToolCall, parse_json_calls, parse_xml_calls
from creditgym.envs.tools import Tool, ToolArgumentError
from creditgym.json_values import to_plain

__all__ = ["ReadAction", "call_record", "read_action"]


@dataclass
class ReadAction:
    """An action as the environment understood it."""

    text: str
    """The action text ("" when the action was not text)."""
    calls: list[ToolCall] = field(default_factory=list)
    """The calls found (also when the action is invalid, for the step's ``tool_calls`` record)."""
    arguments: list[dict[str, Any]] = field(default_factory=list)
    """Each call's validated, converted arguments (filled only for a valid action)."""
    error: str | None = None
    """Why the action is invalid, or None."""


def read_action(
    action: Any,
    tools: Mapping[str, Tool],
    *,
    syntax: str,
    xml_args: Mapping[str, str | None],
    max_calls_per_turn: int,
    answer_tool: str,
) -> ReadAction:
    """The calls of ``action`` and, when a rule is broken, why (see the module docstring)."""
    if isinstance(action, bytes):
        action = action.decode("utf-8", "replace")
    if not isinstance(action, str):
        return ReadAction("", error=f"the action must be text, got {type(action).__name__}")
    out = ReadAction(action)
    names = list(tools)
    if syntax == "xml":
        parsed = parse_xml_calls(action, names, arg_names=xml_args)
    else:
        parsed = parse_json_calls(action)
    if isinstance(parsed, ParseError):
        out.error = parsed.message
        return out
    out.calls = calls = parsed
    if len(calls) > max_calls_per_turn:
        limit = max_calls_per_turn
        out.error = (
            f"{len(calls)} tool calls in one turn, but at most {limit} "
            f"{'is' if limit == 1 else 'are'} allowed; make one call and wait for its result"
        )
        return out
    for call in calls:
        if call.name not in tools:
            out.error = f"unknown tool {call.name!r}; the available tools are: {', '.join(names)}"
            return out
    if len(calls) > 1 and any(c.name == answer_tool for c in calls):
        out.error = f"{answer_tool} must be the only call of its turn"
        return out
    for call in calls:
        try:
            out.arguments.append(tools[call.name].validate(call.arguments))
        except ToolArgumentError as exc:
            out.arguments = []
            out.error = f"invalid arguments: {exc}"
            return out
    return out


def call_record(name: str, arguments: dict[str, Any], error: str | None) -> dict[str, Any]:
    """One entry of a step's ``info["tool_calls"]`` (JSON-ready)."""
    return {"name": name, "arguments": to_plain(arguments), "ok": error is None, "error": error}
