"""Tools from plain Python functions: JSON schema, argument checking, and running with a timeout.

A tool is an ordinary function, sync or async, with type hints and a docstring::

    def search(query: str, k: int = 3) -> str:
        '''Search the corpus.

        Args:
            query: What to look for.
            k: How many passages to return.
        '''

``Tool.from_function`` derives the name (the function's), the description (the docstring's first
paragraph), per-argument descriptions (a Google-style ``Args:`` section or Sphinx ``:param x:``
lines) and a JSON schema from the hints: ``str``, ``int``, ``float``, ``bool``, ``list[...]``,
``dict``, ``Literal[...]``, ``Optional[...]``/``X | None``, other unions, and defaults.
``Tool.schema`` is the OpenAI/Hugging Face ``tools=`` entry
(``{"type": "function", "function": {"name", "description", "parameters"}}``).

``Tool.validate`` checks and converts model-supplied arguments (``"3"`` -> ``3`` for an ``int``,
``"true"`` -> ``True`` for a ``bool``, ...) and raises ``ToolArgumentError`` with a message meant
for the agent. ``run_tool`` runs a tool under a timeout and turns every failure (bad arguments,
an exception of any kind, a timeout, a value that cannot be shown as text) into a ``ToolResult``
with an error string: it never raises, except ``asyncio.CancelledError`` when its caller is
cancelled.

Where calls run is ``creditgym.envs.tool_runner``'s job (``ToolRunner``): sync and async tools
alike run off the caller's event loop, on a bounded pool of threads (a timed-out call is abandoned
and holds one of them until it returns) or in worker processes that are killed on timeout.
``ToolResult``, ``ToolRunner`` and ``result_text`` are re-exported here.

The schema derivation and argument conversion (``parse_docstring``, ``type_schema``,
``convert_value``, ``ToolArgumentError``) live in ``creditgym.envs.tool_schema`` and are
re-exported here.
"""

from __future__ import annotations

import copy
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from creditgym.envs.tool_schema import (
    ToolArgumentError,
    _json_safe,
    _short,
    convert_value,
    parse_docstring,
    type_schema,
)
from creditgym.envs.tool_runner import ToolResult, ToolRunner, result_text
from creditgym.errors import ToolDefinitionError

__all__ = [
    "Param", "Tool", "ToolArgumentError", "ToolResult", "ToolRunner", "as_tool", "convert_value",
    "parse_docstring", "result_text", "run_tool", "type_schema",
]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


@dataclass(frozen=True)
class Param:
    """One parameter of a tool."""

    name: str
    annotation: Any
    required: bool
    default: Any = None
    description: str = ""


@dataclass(frozen=True)
class Tool:
    """A callable the agent may invoke, with its JSON schema.

    Build one with :meth:`from_function`; environments accept plain functions and call it for you.
    """

    name: str
    description: str
    fn: Callable[..., Any]
    params: tuple[Param, ...]
    timeout_s: float | None = None
    """Per-tool timeout; ``None`` uses the environment's ``tool_timeout_s``."""
    _parameters_schema: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout_s: float | None = None,
    ) -> Tool:
        """Build a tool from ``fn``'s name, docstring and type hints.

        Raises ``ToolDefinitionError`` when a parameter has no type hint or a hint has no JSON
        schema, for ``*args``/``**kwargs``, positional-only parameters, or an invalid name.
        """
        if isinstance(fn, Tool):
            return fn
        if not callable(fn):
            raise ToolDefinitionError(f"a tool must be a function, got {type(fn).__name__} {fn!r}")
        tool_name = name or getattr(fn, "__name__", None) or type(fn).__name__
        if not _NAME_RE.match(tool_name):
            raise ToolDefinitionError(
                f"tool name {tool_name!r} is not usable as a call name: use letters, digits, "
                "'_' or '-' (at most 64 characters), starting with a letter or '_'; "
                "pass name=... to choose one"
            )
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise ToolDefinitionError(f"tool {tool_name!r}: cannot read its signature ({exc})") from exc
        target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn).__call__
        try:
            hints = typing.get_type_hints(target)
        except Exception as exc:  # unresolvable forward references
            raise ToolDefinitionError(f"tool {tool_name!r}: cannot resolve its type hints ({exc})") from exc
        summary, arg_docs = parse_docstring(inspect.getdoc(fn) or "")
        params = []
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise ToolDefinitionError(
                    f"tool {tool_name!r}: *args/**kwargs ({p.name}) cannot be described by a "
                    "schema; name every parameter"
                )
            if p.kind is p.POSITIONAL_ONLY:
                raise ToolDefinitionError(
                    f"tool {tool_name!r}: positional-only parameter {p.name!r}; tools are called "
                    "with keyword arguments"
                )
            if p.name not in hints:
                raise ToolDefinitionError(
                    f"tool {tool_name!r}: parameter {p.name!r} has no type hint; add one "
                    "(str, int, float, bool, list[...], Literal[...], Optional[...])"
                )
            required = p.default is inspect.Parameter.empty
            params.append(
                Param(
                    name=p.name,
                    annotation=hints[p.name],
                    required=required,
                    default=None if required else p.default,
                    description=arg_docs.get(p.name, ""),
                )
            )
        properties: dict[str, Any] = {}
        for param in params:
            try:
                prop = type_schema(param.annotation)
            except TypeError as exc:
                raise ToolDefinitionError(f"tool {tool_name!r}, parameter {param.name!r}: {exc}") from exc
            if param.description:
                prop["description"] = param.description
            if not param.required and _json_safe(param.default):
                prop["default"] = param.default
            properties[param.name] = prop
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        required_names = [p.name for p in params if p.required]
        if required_names:
            schema["required"] = required_names
        return cls(
            name=tool_name,
            description=description if description is not None else summary,
            fn=fn,
            params=tuple(params),
            timeout_s=timeout_s,
            _parameters_schema=schema,
        )

    @property
    def is_async(self) -> bool:
        """Whether calling the function returns an awaitable."""
        fn = self.fn
        if inspect.iscoroutinefunction(fn):
            return True
        return not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments object (a fresh copy)."""
        return copy.deepcopy(self._parameters_schema)

    @property
    def schema(self) -> dict[str, Any]:
        """The ``tools=`` entry for chat templates and OpenAI-compatible APIs (a fresh copy)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    @property
    def primary_param(self) -> Param | None:
        """The parameter the XML syntax fills with a tag's content: the first required one, else
        the first one; ``None`` for a tool without parameters."""
        for p in self.params:
            if p.required:
                return p
        return self.params[0] if self.params else None

    def validate(self, arguments: Any) -> dict[str, Any]:
        """Check and convert ``arguments``; raise ``ToolArgumentError`` with an agent-readable
        message when they do not fit."""
        if not isinstance(arguments, dict):
            raise ToolArgumentError(
                f"arguments of {self.name} must be an object of named values, "
                f"got {_short(arguments)}"
            )
        known = {p.name: p for p in self.params}
        unknown = [k for k in arguments if k not in known]
        if unknown:
            valid = ", ".join(known) or "none"
            raise ToolArgumentError(
                f"{self.name} got unknown argument(s) {', '.join(map(repr, unknown))}; "
                f"its arguments are: {valid}"
            )
        missing = [p.name for p in self.params if p.required and p.name not in arguments]
        if missing:
            raise ToolArgumentError(
                f"{self.name} is missing required argument(s) {', '.join(map(repr, missing))}"
            )
        out = {}
        for name, value in arguments.items():
            try:
                out[name] = convert_value(known[name].annotation, value)
            except ToolArgumentError as exc:
                raise ToolArgumentError(f"{self.name}: argument {name!r} {exc}") from None
        return out


def as_tool(obj: Callable[..., Any] | Tool) -> Tool:
    """A ``Tool`` as is, or a function turned into one."""
    return obj if isinstance(obj, Tool) else Tool.from_function(obj)


# ----------------------------------------------------------------------------- running


async def run_tool(
    tool: Tool,
    arguments: dict[str, Any],
    timeout: float | None = None,
    *,
    runner: ToolRunner | None = None,
) -> ToolResult:
    """Validate ``arguments`` and run ``tool`` under ``timeout`` seconds on ``runner``.

    Never raises (except ``asyncio.CancelledError`` when the caller itself is cancelled): bad
    arguments, a failure of the tool and a timeout all come back as ``ToolResult(ok=False,
    error=message)``. ``tool.timeout_s`` overrides ``timeout``; ``None`` or ``<= 0`` means no
    limit. Without ``runner`` the call gets a throw-away thread runner of its own.
    """
    try:
        kwargs = tool.validate(arguments)
    except ToolArgumentError as exc:
        return ToolResult(ok=False, error=f"invalid arguments: {exc}")
    limit = tool.timeout_s if tool.timeout_s is not None else timeout
    if limit is not None and limit <= 0:
        limit = None
    if runner is not None:
        return await runner.call(tool.name, tool.fn, kwargs, limit)
    own = ToolRunner("thread", 1, name=f"creditgym-tool-{tool.name}")
    try:
        return await own.call(tool.name, tool.fn, kwargs, limit)
    finally:
        own.close()  # an abandoned call's thread exits once the call returns
