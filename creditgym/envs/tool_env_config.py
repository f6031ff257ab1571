"""Configuration of ``ToolEnv``: ``ToolEnvConfig``, the built-in answer tool, the checks of a tool
set against a configuration, and the default system prompt text.

``creditgym.envs.tool_env`` re-exports ``ToolEnvConfig``; ``ToolEnv`` calls ``collect_tools`` once
when it is made and ``default_system_prompt`` from its ``system_prompt`` hook.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from creditgym.config import from_dict
from creditgym.envs.rewards import RewardConfig
from creditgym.envs.tools import Tool, as_tool
from creditgym.errors import ConfigError, ToolDefinitionError


@dataclass
class ToolEnvConfig:
    """Settings of a ``ToolEnv`` (YAML-mappable through ``creditgym.config.from_dict``)."""

    syntax: Literal["xml", "json"] = "xml"
    """How calls are written: ``xml`` tags (``<search>q</search>``, Search-R1) or ``json``
    inside ``<tool_call>`` tags (Hermes/Qwen chat templates)."""
    max_turns: int = 8
    """Actions per episode; the last one truncates the episode unless it answered."""
    max_observation_chars: int = 8192
    """Longest observation; longer ones are cut with a visible marker. Also the observation
    space's ``max_length``."""
    max_action_chars: int = 16384
    """The action space's ``max_length`` (longer actions are still accepted)."""
    tool_timeout_s: float | None = 30.0
    """Seconds a tool call may take (``None``: no limit); a tool's own ``timeout_s`` wins."""
    tool_executor: Literal["thread", "process"] = "thread"
    """Where tools run (``creditgym.envs.tool_runner``): ``thread``, a bounded pool of daemon
    threads per environment (a timed-out call is abandoned and holds its thread until it
    returns), or ``process``, worker processes killed on timeout (tools must be picklable:
    module-level functions, not lambdas or closures)."""
    max_tool_workers: int = 4
    """Threads (or processes) per environment that run tool calls. Calls beyond it wait, and one
    whose timeout passes while waiting fails without starting; this caps the threads that
    timed-out tools can hold."""
    max_calls_per_turn: int = 1
    """How many tool calls one action may hold; more makes the action invalid."""
    answer_tool: str = "answer"
    """Name of the built-in tool whose call gives the final answer and ends the episode."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward weights, penalties and costs."""

    def __post_init__(self) -> None:
        if self.syntax not in ("xml", "json"):
            raise ConfigError(f"ToolEnvConfig.syntax must be 'xml' or 'json', got {self.syntax!r}")
        if self.max_turns < 1:
            raise ConfigError(f"ToolEnvConfig.max_turns must be >= 1, got {self.max_turns}")
        if self.max_observation_chars < 64:
            raise ConfigError(
                f"ToolEnvConfig.max_observation_chars must be >= 64, got {self.max_observation_chars}"
            )
        if self.max_action_chars < 1:
            raise ConfigError(f"ToolEnvConfig.max_action_chars must be >= 1, got {self.max_action_chars}")
        if self.tool_executor not in ("thread", "process"):
            raise ConfigError(
                "ToolEnvConfig.tool_executor must be 'thread' or 'process', "
                f"got {self.tool_executor!r}"
            )
        if self.max_tool_workers < 1:
            raise ConfigError(
                f"ToolEnvConfig.max_tool_workers must be >= 1, got {self.max_tool_workers}"
            )
        if self.max_calls_per_turn < 1:
            raise ConfigError(
                f"ToolEnvConfig.max_calls_per_turn must be >= 1, got {self.max_calls_per_turn}"
            )
        if isinstance(self.reward, dict):
            self.reward = from_dict(RewardConfig, self.reward, where="ToolEnvConfig.reward")


def _answer(answer: str) -> str:
    """Give your final answer; this ends the episode.

    Args:
        answer: The final answer, as short as possible (a name, a number, a date).
    """
    return answer


def collect_tools(
    fns: Sequence[Callable[..., Any] | Tool],
    config: ToolEnvConfig,
    make_answer_tool: Callable[[str], Tool],
) -> dict[str, Tool]:
    """The tools by name, the answer tool (made by ``make_answer_tool``) last.

    Raises ``ToolDefinitionError`` for duplicate names, a clash with the answer tool, (in the
    xml syntax) a tool that cannot be called with one text input per tag, or (with
    ``tool_executor="process"``) a tool whose function cannot be pickled.
    """
    tools: dict[str, Tool] = {}
    for fn in fns:
        tool = as_tool(fn)
        if tool.name in tools:
            raise ToolDefinitionError(f"two tools are named {tool.name!r}; names must be unique")
        if tool.name == config.answer_tool:
            raise ToolDefinitionError(
                f"tool {tool.name!r} clashes with the built-in answer tool; rename it or set "
                "ToolEnvConfig.answer_tool"
            )
        tools[tool.name] = tool
        if config.tool_executor == "process":
            _check_picklable(tool)
    tools[config.answer_tool] = make_answer_tool(config.answer_tool)
    if config.syntax == "xml":
        for tool in tools.values():
            required = [p.name for p in tool.params if p.required]
            if len(required) > 1 or tool.name in ("think", "tool_call"):
                raise ToolDefinitionError(
                    f"tool {tool.name!r} cannot be called in the xml syntax, which passes one "
                    f"text input per tag (required parameters: {', '.join(required)}); give "
                    "the others defaults or use syntax='json'"
                )
    return tools


def _check_picklable(tool: Tool) -> None:
    try:
        pickle.dumps(tool.fn)
    except Exception as exc:  # noqa: BLE001 - PicklingError, AttributeError, TypeError, ...
        raise ToolDefinitionError(
            f"tool {tool.name!r} cannot run with tool_executor='process': its function cannot be "
            f"pickled to a worker process ({type(exc).__name__}: {exc}); define it at module "
            "level (not a lambda, closure or local function), or use tool_executor='thread'"
        ) from exc


def default_system_prompt(
    tools: dict[str, Tool], xml_args: dict[str, str | None], config: ToolEnvConfig
) -> str:
    """Instructions for the agent: the tools (xml syntax) and how to call them."""
    answer = config.answer_tool
    per_turn = (
        "one call per turn" if config.max_calls_per_turn == 1
        else f"at most {config.max_calls_per_turn} calls per turn"
    )
    if config.syntax == "json":
        return (
            "Answer the question. You may think inside <think> and </think>. Call the provided "
            f"tools ({per_turn}) by writing <tool_call>{{\"name\": ..., \"arguments\": {{...}}}}"
            f"</tool_call>. When you know the answer, call {answer} with it; that ends the "
            "episode."
        )
    lines = [
        (
            "Answer the question. You may think inside <think> and </think>. Use a tool by "
            f"writing its tag ({per_turn}); the result comes back to you. Tools:"
        )
    ]
    for tool in tools.values():
        if tool.name == answer:
            continue
        arg = xml_args[tool.name]
        lines.append(f"- <{tool.name}>{arg or ''}</{tool.name}>: {tool.description}")
    lines.append(f"When you know the answer, write <{answer}>answer</{answer}>; that ends the episode.")
    return "\n".join(lines)
