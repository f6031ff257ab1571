"""Parsing tool calls out of action text, in both syntaxes."""

from __future__ import annotations

import pytest

from creditgym.envs.parsing import (
    ParseError,
    ToolCall,
    parse_json_calls,
    parse_xml_calls,
    strip_think,
)

NAMES = ["search", "answer"]
ARGS = {"search": "query", "answer": "answer"}


def xml(text):
    return parse_xml_calls(text, NAMES, arg_names=ARGS)


def test_xml_single_calls():
    assert xml("<think>hm</think>\n<search> who wrote Hamlet </search>") == [
        ToolCall("search", {"query": "who wrote Hamlet"}, "<search> who wrote Hamlet </search>")
    ]
    assert xml("<answer>Shakespeare</answer>")[0].arguments == {"answer": "Shakespeare"}


def test_xml_think_content_is_ignored():
    calls = xml("<think>maybe <answer>wrong</answer></think><search>q</search>")
    assert [c.name for c in calls] == ["search"]
    # Chat templates that open <think> in the prompt: the action starts inside reasoning.
    assert [c.name for c in xml("reason <answer>x</answer> more</think><search>q</search>")] == ["search"]
    assert isinstance(xml("<think>unclosed <search>q</search>"), ParseError)


def test_xml_multiple_and_prose_openings():
    calls = xml("<search>a</search> then <answer>b</answer>")
    assert [c.name for c in calls] == ["search", "answer"]
    calls = xml("I will use <search> now. <search>real query</search>")
    assert calls[0].arguments == {"query": "real query"}


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("just prose", "no tool call found"),
        ("", "no tool call found"),
        ("<search>unclosed", "<search> tag is not closed"),
        ("<lookup>x</lookup>", "unknown tool <lookup>"),
        ('<tool_call>{"name": "search"}</tool_call>', "not <tool_call> JSON"),
        ("<information>x</information>", "no tool call found"),
    ],
)
def test_xml_errors(text, fragment):
    result = xml(text)
    assert isinstance(result, ParseError)
    assert fragment in result.message
    assert "<search>query</search>" in result.message
    if "not closed" not in fragment:
        assert "<answer>answer</answer>" in result.message


def test_xml_tool_without_parameters():
    assert parse_xml_calls("<done></done>", ["done"], arg_names={"done": None}) == [
        ToolCall("done", {}, "<done></done>")
    ]
    assert isinstance(parse_xml_calls("<done>x</done>", ["done"], arg_names={"done": None}), ParseError)


def test_json_calls():
    text = '<think>x</think><tool_call>\n{"name": "search", "arguments": {"query": "q"}}\n</tool_call>'
    assert parse_json_calls(text) == [
        ToolCall("search", {"query": "q"}, '<tool_call>\n{"name": "search", "arguments": {"query": "q"}}\n</tool_call>')
    ]
    # OpenAI wire form (arguments as a string), Llama's "parameters", missing arguments.
    assert parse_json_calls('<tool_call>{"name": "a", "arguments": "{\\"x\\": 1}"}</tool_call>')[0].arguments == {"x": 1}
    assert parse_json_calls('<tool_call>{"name": "a", "parameters": {"x": 1}}</tool_call>')[0].arguments == {"x": 1}
    assert parse_json_calls('<tool_call>{"name": "a"}</tool_call>')[0].arguments == {}
    two = parse_json_calls('<tool_call>{"name": "a"}</tool_call><tool_call>{"name": "b"}</tool_call>')
    assert [c.name for c in two] == ["a", "b"]


def test_json_unclosed_final_call_counts_when_complete():
    assert parse_json_calls('<tool_call>{"name": "a", "arguments": {}}')[0].name == "a"
    assert isinstance(parse_json_calls('<tool_call>{"name": "a", "argu'), ParseError)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("no call", "no tool call found"),
        ("<search>q</search>", "no <tool_call> found"),
        ("<tool_call>{bad json}</tool_call>", "not valid JSON"),
        ("<tool_call>[1, 2]</tool_call>", "must be a JSON object"),
        ('<tool_call>{"arguments": {}}</tool_call>', 'needs a "name" string'),
        ('<tool_call>{"name": "a", "arguments": [1]}</tool_call>', '"arguments" of a must be a JSON object'),
        ('<tool_call>{"name": "a", "arguments": "nope"}</tool_call>', '"arguments" of a must be'),
        ('<tool_call>{"name": "a", "args": {}}</tool_call>', "unexpected key(s) 'args'"),
    ],
)
def test_json_errors(text, fragment):
    result = parse_json_calls(text)
    assert isinstance(result, ParseError)
    assert fragment in result.message
    assert '<tool_call>{"name": "TOOL", "arguments": {...}}</tool_call>' in result.message


def test_strip_think():
    assert strip_think("a<think>b</think>c") == "a c"
    assert strip_think("a<think>b") == "a"
    assert strip_think("b</think>c") == "c"


def test_pathological_inputs_are_fast():
    import time

    start = time.monotonic()
    for text in ("<search>" * 5000, "<tool_call>" * 5000, "<think>" * 5000, "<a>" * 10000,
                 "<search><answer>" * 3000):
        xml(text)
        parse_json_calls(text)
    assert time.monotonic() - start < 2.0
