"""``ToolEnv``: a gymnasium environment whose agent acts by writing tool calls in text.

A new environment is a list of plain functions and a list of tasks::

    env = ToolEnv([calculate], tasks=[Task("t0", "What is 6*7?", ["42"])])
    obs, info = env.reset(seed=0)                   # obs: the question; info: task, tools, anchor
    obs, reward, terminated, truncated, info = env.step("<calculate>6*7</calculate>")
    obs, reward, terminated, truncated, info = env.step("<answer>42</answer>")   # reward 1.0

Subclasses change behaviour by overriding small hooks: ``prompt`` and ``system_prompt`` (what
the agent is told), ``render_tool_result`` and ``render_invalid`` (observation text),
``reward`` (the outcome score of a final answer) and ``anchor`` (the state key GiGPO groups on: by
default the observation text with whitespace collapsed, see ``canonical_anchor``).

The contract (the same for every creditgym environment):

- Observations and actions are ``gymnasium.spaces.Text`` (``WideText``: every printable BMP
  character plus tab/newline/CR, ``min_length=0``). Characters outside it are replaced by U+FFFD
  in observations; observations over ``max_observation_chars`` are cut with a visible
  ``\\n[... truncated N characters]`` marker. Any action text is accepted.
- ``reset(seed=None, options=None)``: ``options={"task": Task | dict}`` pins the task, otherwise
  one is drawn from ``tasks`` with the environment's seeded generator. ``info`` holds ``task``
  (``Task.to_dict()``), ``anchor``, ``tools`` (schemas), ``system_prompt``, ``syntax``, ``turn``.
- ``step(action)``: ``info`` holds ``valid``, ``tool_calls`` (one dict per call: name, arguments,
  ok, error), ``anchor``, ``metrics`` (reward components, see ``creditgym.envs.rewards``),
  ``turn``, ``error`` (what was wrong, or None) and ``answer`` (the final answer, or None).
- Calling the answer tool ends the episode (``terminated``); reaching ``max_turns`` without an
  answer truncates it. Either way the outcome reward lands on that final step.
- Malformed actions never raise: they give an observation saying what was wrong,
  ``valid=False`` and ``-invalid_penalty``. Only driving the environment out of order (``step``
  before ``reset`` or after the episode ended) raises ``EnvUsageError``.
- Nothing a tool does makes ``step`` raise or overrun its timeout: any exception
  (``BaseException`` too: tools run in worker threads or processes, where a ``SystemExit`` can
  only be the tool's own), a timeout, or a value that cannot become observation text (a raising
  ``__str__``, a failing ``render_tool_result``) is an invalid action naming the tool and the
  error. Tools run off the caller's loop on the env's ``ToolRunner`` (``tool_executor``
  ``"thread"``, at most ``max_tool_workers`` threads, or ``"process"``, killed on timeout; see
  ``creditgym.envs.tool_runner``); ``close`` releases them.
- Deterministic: the same task, seed and action texts give the same observations, rewards and
  info, provided the tools are deterministic.

``step`` runs ``astep`` on a private event loop (in a helper thread inside a running loop);
rollouts stepping many environments await ``astep``. Re-exported here: ``WideText``,
``sanitize_text``, ``truncate_text`` (``text_space``), ``ToolEnvConfig`` (``tool_env_config``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import gymnasium

from creditgym.config import from_dict
from creditgym.envs.contract import EnvContract
from creditgym.envs.parsing import has_think
from creditgym.envs.episode_tally import EpisodeTally
from creditgym.envs.rewards import outcome_metrics
from creditgym.envs.task import Task
from creditgym.envs.text_space import (  # noqa: F401 - re-exported (pickles name _rebuild_wide_text)
    WideText,
    _rebuild_wide_text,
    canonical_anchor,
    sanitize_text,
    truncate_text,
)
from creditgym.envs.tool_env_config import (
    ToolEnvConfig,
    _answer,
    collect_tools,
    default_system_prompt,
)
from creditgym.envs.tool_calls import call_record, read_action
from creditgym.envs.tool_runner import ToolRunner, describe_exception
from creditgym.envs.tools import Tool, ToolResult, result_text, run_tool
from creditgym.errors import ConfigError, EnvUsageError, ToolDefinitionError

__all__ = [
    "ToolEnv", "ToolEnvConfig", "WideText", "canonical_anchor", "sanitize_text", "truncate_text",
]


# ----------------------------------------------------------------------------- environment


class ToolEnv(EnvContract, gymnasium.Env):
    """Tool calls written in text (see the module docstring); trainer hooks: ``EnvContract``."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 1}
    """``ansi`` renders the transcript so far (prompt, actions, observations) as one string."""

    def __init__(
        self,
        tools: Sequence[Callable[..., Any] | Tool] = (),
        *,
        tasks: Sequence[Task | dict] | None = None,
        config: ToolEnvConfig | dict | None = None,
        syntax: Literal["xml", "json"] | None = None,
        render_mode: str | None = None,
    ) -> None:
        if isinstance(config, dict):
            config = from_dict(ToolEnvConfig, config)
        config = copy.deepcopy(config) if config is not None else ToolEnvConfig()
        if syntax is not None:
            config = dataclasses.replace(config, syntax=syntax)
        self.config = config
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(
                f"render_mode {render_mode!r} is not supported; use one of "
                f"{self.metadata['render_modes']} or None"
            )
        self.render_mode = render_mode
        self.tasks: list[Task] = [t if isinstance(t, Task) else Task.from_dict(t) for t in tasks or ()]
        self.tools: dict[str, Tool] = collect_tools(tools, config, self.make_answer_tool)
        self._xml_args = {
            t.name: (t.primary_param.name if t.primary_param else None) for t in self.tools.values()
        }
        self.observation_space = WideText(config.max_observation_chars)
        self.action_space = WideText(config.max_action_chars)
        self._task: Task | None = None
        self._tally = EpisodeTally()
        self._done = True
        self._started = False
        self._busy = False
        self._transcript: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: ToolRunner | None = None

    # ------------------------------------------------------------------ hooks

    def make_answer_tool(self, name: str) -> Tool:
        """The built-in answer tool (one ``answer: str`` parameter); override to redescribe it."""
        return Tool.from_function(_answer, name=name)

    def prompt(self, task: Task) -> str:
        """The first observation (the user message): the question by default."""
        return task.question

    def system_prompt(self, task: Task) -> str:
        """Instructions for the agent (a system message); lists the tools and how to call them."""
        return default_system_prompt(self.tools, self._xml_args, self.config)

    def render_tool_result(self, name: str, result: ToolResult) -> str:
        """Observation text of one call's result (``result.ok``) or failure (``result.error``);
        if it raises or returns a non-str, the call fails and the observation says why."""
        if result.ok:
            text = result.text if result.text is not None else result_text(result.value)
        else:
            text = f"Error: {result.error}"
        if self.config.syntax == "xml":
            return f"\n<result>\n{text}\n</result>\n"
        return text

    def render_invalid(self, message: str) -> str:
        """Observation text for an invalid action (no tool ran)."""
        if self.config.syntax == "xml":
            return f"\nMy previous action is invalid: {message}. Let me try again.\n"
        return f"Invalid action: {message}."

    def reward(self, task: Task, answer: str | None) -> dict[str, float]:
        """Outcome metrics of the final answer (``None``: the episode ended without one).

        Must hold ``reward`` (reported as ``reward/outcome``); ``correct`` (0/1, used by the
        format shaping) defaults to ``em``. Every other key is reported in ``info["metrics"]`` as
        is, and keys named ``reward/<x>`` are added to the step's reward as extra components.
        """
        return outcome_metrics(answer, task.golden_answers, self.config.reward)

    def anchor(self, task: Task, observation: str) -> str:
        """GiGPO's key of the state the agent now sees (no history): the observation text with
        whitespace runs collapsed (``canonical_anchor``). Anchors compare as text, exactly or by
        difflib similarity; groups are per task, so the task is not part of it."""
        return canonical_anchor(observation)

    # ------------------------------------------------------------------ API

    @property
    def tool_schemas(self) -> list[dict[str, Any]]:
        """``tools=`` entries for chat templates, answer tool included (fresh copies)."""
        return [tool.schema for tool in self.tools.values()]

    @property
    def task(self) -> Task | None:
        """The current episode's task."""
        return self._task

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"task"}
        if unknown:
            raise EnvUsageError(
                f"unknown reset option(s) {', '.join(sorted(map(repr, unknown)))}; "
                "the only option is 'task'"
            )
        task = options.get("task")
        if task is None:
            if not self.tasks:
                raise EnvUsageError(
                    f"{type(self).__name__} has no tasks to draw from; pass tasks=[...] when "
                    "making it or reset(options={'task': task})"
                )
            task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        elif isinstance(task, dict):
            task = Task.from_dict(task)
        elif not isinstance(task, Task):
            raise EnvUsageError(f"options['task'] must be a Task or its dict, got {type(task).__name__}")
        self._task = task
        self._tally = EpisodeTally()
        self._done = False
        self._started = True
        obs = self._fit(self.prompt(task))
        self._transcript = [obs] if self.render_mode == "ansi" else []
        info = {
            "task": task.to_dict(),
            "anchor": self.anchor(task, obs),
            "tools": self.tool_schemas,
            "system_prompt": self.system_prompt(task),
            "syntax": self.config.syntax,
            "turn": 0,
        }
        return obs, info

    def step(self, action: str):
        coro = self.astep(action)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._private_loop().run_until_complete(coro)
        # Inside a running loop (a notebook, an async app): run on the private loop elsewhere.
        loop = self._private_loop()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(loop.run_until_complete, coro).result()

    async def astep(self, action: str):
        """``step`` as a coroutine, for stepping many environments on one loop (tools still run
        off the loop, on the environment's ``ToolRunner``)."""
        if not self._started:
            raise EnvUsageError("call reset() before step()")
        if self._done:
            raise EnvUsageError("the episode has ended; call reset() to start a new one")
        if self._busy:
            raise EnvUsageError("a step of this environment is already running; await it first")
        self._busy = True
        try:
            return await self._step(action)
        finally:
            self._busy = False

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return "".join(self._transcript)
        return None

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        if self._loop is not None and not self._loop.is_running():
            self._loop.close()
            self._loop = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # never raise from a finaliser
            self.close()

    # ------------------------------------------------------------------ internals

    def _private_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop

    def _fit(self, text: str) -> str:
        # Cut first: sanitising keeps the length, and a tool may return megabytes.
        return sanitize_text(truncate_text(text, self.config.max_observation_chars))

    def _tool_runner(self) -> ToolRunner:
        if self._runner is None:
            cfg = self.config
            self._runner = ToolRunner(cfg.tool_executor, cfg.max_tool_workers)
        return self._runner

    def _render_result(self, name: str, result: ToolResult) -> tuple[str, str | None]:
        """One call's observation part and error; what the tool returned cannot make it raise."""
        try:
            part = self.render_tool_result(name, result)
            if not isinstance(part, str):
                raise TypeError(f"render_tool_result returned {type(part).__name__}, not str")
            return part, (None if result.ok else result.error)
        except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
            raise  # in the caller's own thread: the user's Ctrl-C, a cancelled step
        except BaseException as exc:  # noqa: BLE001 - see the module docstring
            why = describe_exception(exc)
            error = f"the result of tool {name} cannot become an observation ({why})"
            return self.render_invalid(error), error

    async def _step(self, action: Any):
        cfg, task = self.config, self._task
        assert task is not None
        read = read_action(
            action, self.tools, syntax=cfg.syntax, xml_args=self._xml_args,
            max_calls_per_turn=cfg.max_calls_per_turn, answer_tool=cfg.answer_tool,
        )
        text, calls, converted, error = read.text, read.calls, read.arguments, read.error

        answer: str | None = None
        executed: list[str] = []  # names of the tools that ran (and are paid for)
        records: list[dict[str, Any]] = []
        step_valid = error is None
        if error is not None:
            obs_text = self.render_invalid(error)
            records = [call_record(c.name, c.arguments, error) for c in calls]
        elif calls[0].name == cfg.answer_tool:
            answer = str(converted[0].get("answer", next(iter(converted[0].values()), "")))
            obs_text = ""
            records = [call_record(cfg.answer_tool, converted[0], None)]
        else:
            runner = self._tool_runner()
            results = await asyncio.gather(
                *(run_tool(self.tools[c.name], args, cfg.tool_timeout_s, runner=runner)
                  for c, args in zip(calls, converted))
            )
            parts = []
            for call, args, result in zip(calls, converted, results):
                executed.append(call.name)
                part, call_error = self._render_result(call.name, result)
                parts.append(part)
                records.append(call_record(call.name, args, call_error))
                if call_error is not None:
                    step_valid = False
                    error = error or call_error
            obs_text = "\n".join(parts) if cfg.syntax == "json" and len(parts) > 1 else "".join(parts)

        self._tally.step(valid=step_valid, think=has_think(text), executed=executed)
        rc = cfg.reward
        metrics: dict[str, float] = {
            "reward/invalid": 0.0 if step_valid else 0.0 - rc.invalid_penalty,
            "reward/search_cost": 0.0 - rc.search_cost * sum(n in rc.costly_tools for n in executed),
        }
        terminated = answer is not None
        truncated = not terminated and self._tally.turn >= cfg.max_turns
        if terminated or truncated:
            self._done = True
            metrics.update(self._outcome(task, answer))
        metrics["reward"] = float(sum(v for k, v in metrics.items() if k.startswith("reward/")))

        obs = self._fit(obs_text)
        if self.render_mode == "ansi":
            self._transcript += [text, obs]
        info = {
            "valid": step_valid,
            "tool_calls": records,
            "anchor": self.anchor(task, obs),
            "metrics": metrics,
            "turn": self._tally.turn,
            "error": error,
            "answer": answer,
        }
        return obs, metrics["reward"], terminated, truncated, info

    def _outcome(self, task: Task, answer: str | None) -> dict[str, float]:
        scored = {k: float(v) for k, v in self.reward(task, answer).items()}
        if "reward" not in scored:
            raise ToolDefinitionError(
                f"{type(self).__name__}.reward() must return a dict with a 'reward' key"
            )
        return self._tally.outcome_metrics(scored, answer=answer, tool_names=self.tools,
                                           config=self.config)
