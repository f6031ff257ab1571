"""Tools from functions: schemas, docstrings, argument conversion, running with timeouts."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import pytest

from creditgym.envs.tools import (
    Tool,
    ToolArgumentError,
    parse_docstring,
    run_tool,
    type_schema,
)
from creditgym.errors import ToolDefinitionError


def search(query: str, k: int = 3, mode: Literal["bm25", "dense"] = "bm25",
           filters: list[str] | None = None, exact: bool = False, boost: float = 1.0) -> str:
    """Search the corpus for passages.

    More detail that is not part of the summary.

    Args:
        query: What to look for.
        k (int): How many passages
            to return.
        mode: Which index.
        filters: Titles to restrict to.
        exact: Match the phrase.
        boost: Score multiplier.

    Returns:
        The passages.
    """
    return f"{query}|{k}|{mode}|{filters}|{exact}|{boost}"


def test_schema_from_hints_and_docstring():
    tool = Tool.from_function(search)
    assert tool.name == "search"
    assert tool.description == "Search the corpus for passages."
    params = tool.schema["function"]["parameters"]
    assert params["required"] == ["query"]
    props = params["properties"]
    assert props["query"] == {"type": "string", "description": "What to look for."}
    assert props["k"] == {"type": "integer", "description": "How many passages to return.",
                          "default": 3}
    assert props["mode"]["enum"] == ["bm25", "dense"] and props["mode"]["type"] == "string"
    assert props["filters"]["type"] == "array" and props["filters"]["items"] == {"type": "string"}
    assert props["filters"]["nullable"] is True
    assert props["exact"]["type"] == "boolean" and props["boost"]["type"] == "number"
    assert tool.schema["type"] == "function"
    assert tool.primary_param.name == "query"


def test_schema_is_a_fresh_copy():
    tool = Tool.from_function(search)
    s = tool.schema
    s["function"]["parameters"]["properties"].clear()
    assert tool.schema["function"]["parameters"]["properties"]


def test_sphinx_docstring_and_union_types():
    def f(a: int | str, b: dict[str, int] | None = None) -> str:
        """Do f.

        :param a: first thing
        :param b: second thing
        """
        return ""

    tool = Tool.from_function(f)
    props = tool.parameters["properties"]
    assert props["a"] == {"type": ["integer", "string"], "description": "first thing"}
    assert props["b"]["type"] == "object" and props["b"]["nullable"] is True
    assert parse_docstring("")[0] == ""


def test_definition_errors():
    def no_hint(x):
        return x

    def varargs(*xs: str):
        return ""

    def bad_type(x: object):
        return ""

    for fn in (no_hint, varargs, bad_type):
        with pytest.raises(ToolDefinitionError):
            Tool.from_function(fn)
    with pytest.raises(ToolDefinitionError):
        Tool.from_function(search, name="bad name!")
    with pytest.raises(TypeError):
        type_schema(set[object] | object)


@pytest.mark.parametrize(
    "args,expected",
    [
        ({"query": "q"}, {"query": "q"}),
        ({"query": 5, "k": "7"}, {"query": "5", "k": 7}),
        ({"query": "q", "k": 2.0, "exact": "TRUE", "boost": "2.5"},
         {"query": "q", "k": 2, "exact": True, "boost": 2.5}),
        ({"query": "q", "mode": "dense", "filters": ["a", 1]},
         {"query": "q", "mode": "dense", "filters": ["a", "1"]}),
        ({"query": "q", "filters": None}, {"query": "q", "filters": None}),
    ],
)
def test_validate_converts(args, expected):
    assert Tool.from_function(search).validate(args) == expected


@pytest.mark.parametrize(
    "args,fragment",
    [
        ("not a dict", "must be an object"),
        ({}, "missing required argument(s) 'query'"),
        ({"query": "q", "nope": 1}, "unknown argument(s) 'nope'"),
        ({"query": "q", "k": "three"}, "'k' must be an integer"),
        ({"query": "q", "k": True}, "'k' must be an integer"),
        ({"query": "q", "mode": "sparse"}, "must be one of \"bm25\", \"dense\""),
        ({"query": "q", "exact": "yes"}, "must be true or false"),
        ({"query": "q", "filters": "a"}, "must be a list"),
        ({"query": "q", "boost": "nan"}, "must be a number"),
        ({"query": ["q"]}, "must be a string"),
    ],
)
def test_validate_rejects_with_message(args, fragment):
    with pytest.raises(ToolArgumentError) as exc:
        Tool.from_function(search).validate(args)
    assert fragment in str(exc.value)


def test_run_sync_and_async():
    async def asearch(query: str) -> dict:
        """Async search."""
        await asyncio.sleep(0)
        return {"q": query}

    async def go():
        r1 = await run_tool(Tool.from_function(search), {"query": "x"}, timeout=5)
        r2 = await run_tool(Tool.from_function(asearch), {"query": "y"}, timeout=5)
        return r1, r2

    r1, r2 = asyncio.run(go())
    assert r1.ok and r1.value == "x|3|bm25|None|False|1.0"
    assert r2.ok and r2.value == {"q": "y"}
    assert Tool.from_function(asearch).is_async


def test_run_failures_become_messages():
    def boom(x: str) -> str:
        """Raise."""
        raise ZeroDivisionError("division by zero")

    def slow(x: str) -> str:
        """Sleep."""
        time.sleep(1.0)
        return "late"

    async def aslow(x: str) -> str:
        """Sleep, async."""
        await asyncio.sleep(10)
        return "late"

    def stop(x: str) -> str:
        """Raise StopIteration, which futures refuse."""
        raise StopIteration

    async def go():
        return await asyncio.gather(
            run_tool(Tool.from_function(boom), {"x": "1"}, timeout=5),
            run_tool(Tool.from_function(slow), {"x": "1"}, timeout=0.1),
            run_tool(Tool.from_function(aslow), {"x": "1"}, timeout=0.1),
            run_tool(Tool.from_function(boom), {"y": "1"}, timeout=5),
            run_tool(Tool.from_function(stop), {"x": "1"}, timeout=5),
        )

    start = time.monotonic()
    boom_r, slow_r, aslow_r, bad_r, stop_r = asyncio.run(go())
    assert time.monotonic() - start < 0.9  # neither slow tool was waited for
    assert not boom_r.ok and boom_r.error == "tool boom failed with ZeroDivisionError: division by zero"
    assert not slow_r.ok and slow_r.error == "tool slow timed out after 0.1 s"
    assert not aslow_r.ok and aslow_r.error == "tool aslow timed out after 0.1 s"
    assert not bad_r.ok and "unknown argument(s) 'y'" in bad_r.error
    assert not stop_r.ok and "StopIteration" in stop_r.error


def test_per_tool_timeout_wins():
    async def aslow(x: str) -> str:
        """Sleep."""
        await asyncio.sleep(10)
        return ""

    tool = Tool.from_function(aslow, timeout_s=0.05)
    result = asyncio.run(run_tool(tool, {"x": ""}, timeout=100))
    assert result.error == "tool aslow timed out after 0.05 s"
