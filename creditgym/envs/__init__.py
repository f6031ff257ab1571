"""Environments: the gymnasium contract, tools, the built-in world, task loaders, rewards and retrieval.

The names below are imported lazily (on first use), so ``import creditgym.envs.retrieval`` stays
light; importing this package registers the built-in environment ids with gymnasium.
"""

from __future__ import annotations

import importlib
from typing import Any

from creditgym.envs.registration import register_envs

_EXPORTS = {
    "astep": "creditgym.envs.async_step",
    "AsyncWrapper": "creditgym.envs.async_step",
    "Demonstration": "creditgym.envs.demonstration",
    "call_text": "creditgym.envs.demonstration",
    "scripted_demonstrations": "creditgym.envs.demonstration",
    "Task": "creditgym.envs.task",
    "ToolEnv": "creditgym.envs.tool_env",
    "ToolEnvConfig": "creditgym.envs.tool_env",
    "Tool": "creditgym.envs.tools",
    "ToolResult": "creditgym.envs.tools",
    "run_tool": "creditgym.envs.tools",
    "ToolCall": "creditgym.envs.parsing",
    "ParseError": "creditgym.envs.parsing",
    "parse_xml_calls": "creditgym.envs.parsing",
    "parse_json_calls": "creditgym.envs.parsing",
    "RewardConfig": "creditgym.envs.rewards",
    "normalize_answer": "creditgym.envs.rewards",
    "exact_match": "creditgym.envs.rewards",
    "token_f1": "creditgym.envs.rewards",
    "load_searchr1_tasks": "creditgym.envs.loaders",
}

__all__ = [
    "AsyncWrapper", "Demonstration", "ParseError", "RewardConfig", "Task", "Tool", "ToolCall",
    "ToolEnv", "ToolEnvConfig", "ToolResult", "astep", "call_text", "exact_match",
    "load_searchr1_tasks", "normalize_answer", "parse_json_calls", "parse_xml_calls",
    "register_envs", "run_tool", "scripted_demonstrations", "token_f1",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'creditgym.envs' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


register_envs()
