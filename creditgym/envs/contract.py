"""What a trainer asks of an environment class, with the defaults every ``ToolEnv`` has.

``EnvContract`` is mixed into ``ToolEnv``; subclasses override what differs. A trainer reads
only these (never an environment's private attributes), so it can train any environment:

- ``env.unwrapped.stop_strings``: where generation of one action stops: each tool's closing tag
  (xml syntax: ``</search>``, ``</answer>``, ...), or ``</tool_call>`` and the answer tool's
  closing tag (json syntax).
- ``aggregate_metrics(episodes)`` (classmethod): one row of metrics out of per-episode dicts
  (an episode's final ``metrics`` plus ``success``, ``reward``, ``turns``,
  ``invalid_actions``). Default: the mean of every numeric key, over the episodes that have it.
- ``demonstrations(env_kwargs, *, count, seed, options)`` (classmethod): an iterator of
  ``creditgym.envs.demonstration.Demonstration`` (expert episodes for a warm start), or None
  when the environment has no demonstrator (the default). ``options`` is the environment's
  own dict, passed through unread by the trainer.
- ``corpus_texts(env_kwargs, *, demonstrator)`` (classmethod): the texts a tokenizer fitted for
  this environment should learn (its training questions and the documents its observations quote,
  of its own world and of the worlds its demonstrator plays in with options ``demonstrator``),
  or None (the default): then a trainer fits a tiny model's tokenizer to the training tasks'
  questions and the demonstrations' texts. Never the held-out tasks' texts.
- ``make_factory(**kwargs)`` (classmethod): a zero-argument callable making one more
  environment; it may carry a ``close()`` for resources the environments share. Default:
  ``lambda: cls(**kwargs)``.
- ``check_kwargs(kwargs)`` (classmethod): raise ``ConfigError`` naming what is wrong with the
  options, without building anything heavy. Default: the options must bind to ``__init__``
  (a ``**kwargs`` of a ``ToolEnv`` subclass forwards to ``ToolEnv.__init__``'s keywords) and a
  ``config`` mapping must be a valid ``config_class``.
- ``env.unwrapped.tasks``: the task list (a plain attribute of ``ToolEnv``).
- ``turn_labels(trajectory)`` (classmethod): ground truth for the credit bench
  (``creditgym credit-bench``): one label per turn of a recorded ``Trajectory``, each one of
  ``TURN_LABELS``: ``"useful"`` (the turn made progress), ``"harmful"`` (it ended the episode
  unsuccessfully) or ``"wasted"`` (neither). Computed only from the record (task dict and its
  metadata, actions, observations, valid flags, tool calls, outcome metrics), never by building
  an environment, so labelling a file is cheap and safe. Default: None (no labels); an
  environment also returns None for a record it cannot judge (a task without the metadata its
  labels need, a record without the per-turn texts).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from creditgym.config import from_dict
from creditgym.envs.tool_env_config import ToolEnvConfig
from creditgym.errors import ConfigError

# Keywords ToolEnv.__init__ takes besides the tools: what a subclass's **kwargs may forward.
_TOOL_ENV_KEYWORDS = ("tasks", "config", "syntax", "render_mode")

TURN_LABELS = ("useful", "wasted", "harmful")
"""The labels ``turn_labels`` may return, best first (the credit bench ranks them so)."""


def ended_unsuccessfully(trajectory: Any) -> bool:
    """Whether the record's episode failed: its outcome metrics do not say it succeeded
    (``Trajectory.success`` is False, or None when the episode ended without an outcome, e.g.
    cut by the context budget). Its last turn is then the ``"harmful"`` one."""
    return trajectory.success is not True


class EnvContract:
    """Mixin of the trainer-facing hooks (see the module docstring); needs ``self.config``
    (a ``ToolEnvConfig``) and ``self.tools`` (name -> tool, the answer tool included)."""

    config_class: ClassVar[type] = ToolEnvConfig
    """The dataclass a ``config`` mapping is read into (checked by ``check_kwargs``)."""

    @property
    def stop_strings(self) -> list[str]:
        """Strings at which the generation of one action stops (one call per action)."""
        config = self.config  # type: ignore[attr-defined]
        if config.syntax == "xml":
            return [f"</{name}>" for name in self.tools]  # type: ignore[attr-defined]
        return ["</tool_call>", f"</{config.answer_tool}>"]

    @classmethod
    def aggregate_metrics(cls, episodes: list[dict[str, Any]]) -> dict[str, float]:
        """The mean of every numeric key (bools count as 0/1), over the episodes that have it;
        NaN values are left out of a mean."""
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for episode in episodes:
            for key, value in episode.items():
                if isinstance(value, (int, float)) and not math.isnan(value):
                    sums[key] = sums.get(key, 0.0) + float(value)
                    counts[key] = counts.get(key, 0) + 1
        return {key: sums[key] / counts[key] for key in sums}

    @classmethod
    def demonstrations(
        cls, env_kwargs: dict[str, Any], *, count: int, seed: int, options: dict[str, Any],
    ) -> Iterator[Any] | None:
        """Expert episodes for a warm start, or None: this environment has no demonstrator."""
        return None

    @classmethod
    def corpus_texts(cls, env_kwargs: dict[str, Any], *,
                     demonstrator: dict[str, Any]) -> list[str] | None:
        """Texts to fit a tokenizer for this environment to, or None: use the demonstrations."""
        return None

    @classmethod
    def turn_labels(cls, trajectory: Any) -> list[str] | None:
        """One of ``TURN_LABELS`` per turn of ``trajectory``, or None: no ground truth here."""
        return None

    @classmethod
    def make_factory(cls, **kwargs: Any) -> Callable[[], Any]:
        """A callable making one more environment with ``kwargs`` per call."""

        def make_env() -> Any:
            return cls(**kwargs)

        return make_env

    @classmethod
    def check_kwargs(cls, kwargs: dict[str, Any]) -> None:
        """Raise ``ConfigError`` if ``kwargs`` cannot be this environment's options."""
        params = dict(inspect.signature(cls.__init__).parameters)
        params.pop(next(iter(params)))  # self
        keywords = [n for n, p in params.items()
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            from creditgym.envs.tool_env import ToolEnv

            if not issubclass(cls, ToolEnv):
                return  # takes anything: only building it can tell
            keywords += [k for k in _TOOL_ENV_KEYWORDS if k not in keywords]
        unknown = sorted(set(kwargs) - set(keywords))
        if unknown:
            raise ConfigError(
                f"{cls.__name__} does not take the option(s) {', '.join(map(repr, unknown))}; "
                f"its options are: {', '.join(keywords) or '(none)'}")
        config = kwargs.get("config")
        if isinstance(config, dict):
            from_dict(cls.config_class, config, where=f"{cls.__name__} config")
        syntax = kwargs.get("syntax")
        if syntax is not None and syntax not in ("xml", "json"):
            raise ConfigError(f"{cls.__name__}: syntax must be 'xml' or 'json', got {syntax!r}")
