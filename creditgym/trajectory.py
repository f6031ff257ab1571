"""The trajectory record shared by rollouts, credit estimators, trainers and replay.

One ``Trajectory`` is one episode of one task: the prompt token ids, then per turn the policy's
action ids (with their log-probs) and the environment's observation ids, plus per-turn rewards,
anchors (state key before the turn's action, for GiGPO) and valid flags. ``tokens()`` and
``loss_mask()`` rebuild the flat sequence the policy was trained on: prompt (mask 0), then per turn
action ids (mask 1) and observation ids (mask 0). ``to_dict``/``from_dict`` give the JSON form,
versioned as ``"schema": "creditgym.trajectory/1"``. Every recorder (the rollout, the
demonstrations of the SFT warm start) builds a record the same way: ``add_turn`` per step, then
``finish`` (how the episode ended; outcome ``metrics`` from the last turn).

A record also holds what ``creditgym replay`` needs to re-step the episode and show it: the
environment id and keyword arguments (``gymnasium.make(env_id, **env_kwargs)``), the reset seed,
the chat messages the prompt was rendered from, and per turn the decoded action text, the
observation text, ``info["metrics"]``, the tool calls and the generation's finish reason. Those
per-turn lists are either empty (not recorded) or have one entry per turn; ``from_dict`` accepts
records written before they existed (as it does records without ``iteration``, the training
iteration a record belongs to).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from creditgym.errors import CreditGymError
from creditgym.json_values import to_plain

SCHEMA = "creditgym.trajectory/1"

_PER_TURN = ("action_ids", "action_logprobs", "observation_ids", "rewards", "anchors", "valid")
"""Per-turn lists that must have exactly one entry per turn."""
_PER_TURN_OPTIONAL = ("actions", "observations", "turn_metrics", "tool_calls", "finish_reasons")
"""Per-turn lists that are either empty (not recorded) or have one entry per turn."""
_REQUIRED = ("id", "group", "task", "prompt_ids")


class TrajectoryFormatError(CreditGymError, ValueError):
    """A trajectory record is inconsistent or not in the ``creditgym.trajectory/1`` form."""


@dataclass
class Trajectory:
    """One recorded episode; per-turn lists all have one entry per turn."""

    id: str
    """Unique id of this trajectory."""
    group: str
    """Group id: the n rollouts of one task with one reset seed share it."""
    task: dict[str, Any]
    """The task as a JSON-ready dict (``Task.to_dict()``)."""
    prompt_ids: list[int]
    """Token ids of the rendered prompt (loss mask 0)."""
    action_ids: list[list[int]] = field(default_factory=list)
    """Per turn: the generated token ids (loss mask 1)."""
    action_logprobs: list[list[float]] = field(default_factory=list)
    """Per turn: the rollout policy's log-prob of each generated token."""
    observation_ids: list[list[int]] = field(default_factory=list)
    """Per turn: token ids of the observation appended after the action (loss mask 0)."""
    rewards: list[float] = field(default_factory=list)
    """Per turn: environment reward."""
    anchors: list[Any] = field(default_factory=list)
    """Per turn: hashable, JSON-ready key of the state seen before the action (no history)."""
    valid: list[bool] = field(default_factory=list)
    """Per turn: whether the action was well-formed."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Outcome metrics of the episode (``em``, ``f1``, ``success``, ...)."""
    advantages: list[float] | None = None
    """Optional per-token advantages aligned with ``tokens()`` (set by a credit estimator). In a
    training run's ``rollouts.jsonl``: exactly the advantages the policy update used."""
    iteration: int | None = None
    """Training iteration the record belongs to: ``rollouts.jsonl`` records of iteration ``i``
    were trained on by update ``i``; evaluation records carry the number of updates taken
    before them. None: not from a training run."""
    env_id: str = ""
    """Gymnasium id of the environment (``creditgym/Search-v0``); empty: not recorded."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """JSON-ready keyword arguments that rebuild the environment with
    ``gymnasium.make(env_id, **env_kwargs)``."""
    seed: int | None = None
    """Seed passed to ``env.reset(seed=..., options={"task": task})``."""
    prompt_messages: list[dict[str, Any]] = field(default_factory=list)
    """The chat messages (system + user) the prompt ids were rendered from."""
    actions: list[str] = field(default_factory=list)
    """Per turn: the decoded action text passed to ``env.step`` (empty list: not recorded)."""
    observations: list[str] = field(default_factory=list)
    """Per turn: the observation text ``env.step`` returned (empty list: not recorded)."""
    turn_metrics: list[dict[str, Any]] = field(default_factory=list)
    """Per turn: ``info["metrics"]`` of the step (reward components, outcome on the last)."""
    tool_calls: list[list[dict[str, Any]]] = field(default_factory=list)
    """Per turn: ``info["tool_calls"]`` of the step (name, arguments, ok, error per call)."""
    finish_reasons: list[str] = field(default_factory=list)
    """Per turn: why generation stopped (``stop``, ``length`` or ``error``)."""
    terminated: bool = False
    """The environment ended the episode (an answer was given)."""
    truncated: bool = False
    """The episode was cut: turn limit, or the context budget (which is not an error)."""
    error: str | None = None
    """What made the rollout fail (environment raised, backend error); None when it did not."""
    created: float = field(default_factory=time.time)
    """Unix time the record was made."""

    def __post_init__(self) -> None:
        n = len(self.action_ids)
        bad = {k: len(getattr(self, k)) for k in _PER_TURN if len(getattr(self, k)) != n}
        bad.update(
            (k, len(getattr(self, k)))
            for k in _PER_TURN_OPTIONAL
            if len(getattr(self, k)) not in (0, n)
        )
        if bad:
            raise TrajectoryFormatError(
                f"trajectory {self.id!r}: per-turn lists must have one entry per turn "
                f"(action_ids has {n}; {', '.join(_PER_TURN_OPTIONAL)} may also be empty); got "
                + ", ".join(f"{k}={v}" for k, v in bad.items())
            )
        for t, (a, lp) in enumerate(zip(self.action_ids, self.action_logprobs)):
            if len(a) != len(lp):
                raise TrajectoryFormatError(
                    f"trajectory {self.id!r} turn {t}: {len(a)} action ids but {len(lp)} logprobs"
                )

    def add_turn(
        self, *, action: str, action_ids: list[int], observation: str,
        observation_ids: list[int], reward: float, anchor: Any, info: dict[str, Any],
        action_logprobs: list[float] | None = None, finish_reason: str = "stop",
    ) -> None:
        """Append one turn: the action (text and ids), the observation the step returned (its
        text, and the ids appended to the sequence: empty when the episode ended there), the
        step's reward, the anchor seen before the action, and from ``info`` its ``valid`` flag,
        ``tool_calls`` and ``metrics``. ``action_logprobs`` None (a demonstration, not sampled):
        zeros. Every recorder (rollout, demonstrations) goes through here, so records agree."""
        ids = [int(t) for t in action_ids]
        logprobs = ([0.0] * len(ids) if action_logprobs is None
                    else [float(x) for x in action_logprobs])
        if len(logprobs) != len(ids):
            raise TrajectoryFormatError(
                f"trajectory {self.id!r} turn {self.n_turns}: {len(ids)} action ids but "
                f"{len(logprobs)} logprobs; pass one log-prob per generated token (or None)"
            )
        if self.n_turns and not self.actions:
            raise TrajectoryFormatError(
                f"trajectory {self.id!r}: add_turn on a record whose earlier turns were built "
                f"without texts; build every turn with add_turn"
            )
        self.action_ids.append(ids)
        self.action_logprobs.append(logprobs)
        self.observation_ids.append([int(t) for t in observation_ids])
        self.rewards.append(float(reward))
        self.anchors.append(anchor)
        self.valid.append(bool(info.get("valid", True)))
        self.actions.append(action)
        self.observations.append(observation)
        self.turn_metrics.append(dict(info.get("metrics") or {}))
        self.tool_calls.append(list(info.get("tool_calls") or []))
        self.finish_reasons.append(finish_reason)

    def finish(self, *, terminated: bool, truncated: bool) -> None:
        """End the episode: how it ended, and its outcome ``metrics`` (the last turn's metrics;
        empty when no turn was taken). Keys already in ``metrics`` that the last turn does not
        set (rollout diagnostics) are kept."""
        self.terminated, self.truncated = bool(terminated), bool(truncated)
        last = dict(self.turn_metrics[-1]) if self.turn_metrics else {}
        self.metrics = {**self.metrics, **last}

    @property
    def n_turns(self) -> int:
        return len(self.action_ids)

    @property
    def success(self) -> bool | None:
        """Whether the episode succeeded: ``metrics["success"]``, else ``em``/``correct`` >= 0.5;
        None when the metrics say neither."""
        for key in ("success", "em", "correct"):
            if key in self.metrics and self.metrics[key] is not None:
                return float(self.metrics[key]) >= 0.5
        return None

    @property
    def episode_return(self) -> float:
        """Sum of the per-turn rewards."""
        return float(sum(self.rewards))

    def turn_lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """(action lengths, observation lengths) per turn."""
        a = np.fromiter(map(len, self.action_ids), dtype=np.int64, count=self.n_turns)
        o = np.fromiter(map(len, self.observation_ids), dtype=np.int64, count=self.n_turns)
        return a, o

    def tokens(self) -> np.ndarray:
        """The flat token sequence: prompt, then per turn action ids and observation ids."""
        parts = [self.prompt_ids]
        for a, o in zip(self.action_ids, self.observation_ids):
            parts += [a, o]
        return np.fromiter((t for p in parts for t in p), dtype=np.int64)

    def loss_mask(self) -> np.ndarray:
        """1 on action tokens, 0 on prompt and observation tokens (aligned with ``tokens()``)."""
        a, o = self.turn_lengths()
        pieces = np.stack([a, o], axis=1).ravel()
        marks = np.tile([1, 0], self.n_turns)
        body = np.repeat(marks, pieces).astype(np.int8)
        return np.concatenate([np.zeros(len(self.prompt_ids), dtype=np.int8), body])

    def turn_of_token(self) -> np.ndarray:
        """Turn index of each token (-1 on the prompt), aligned with ``tokens()``."""
        a, o = self.turn_lengths()
        body = np.repeat(np.arange(self.n_turns), a + o)
        return np.concatenate([np.full(len(self.prompt_ids), -1, dtype=np.int64), body])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with ``"schema": "creditgym.trajectory/1"``."""
        d: dict[str, Any] = {"schema": SCHEMA}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = to_plain(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        """Inverse of :meth:`to_dict`; rejects other schemas and unknown keys. Optional fields
        missing from the record take their defaults (``created``: 0.0, unknown)."""
        if d.get("schema") != SCHEMA:
            raise TrajectoryFormatError(
                f"trajectory record has schema {d.get('schema')!r}; this version reads {SCHEMA!r}"
            )
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - {"schema"})
        if unknown:
            raise TrajectoryFormatError(f"trajectory record has unknown key(s) {unknown}")
        missing = sorted(set(_REQUIRED) - set(d))
        if missing:
            raise TrajectoryFormatError(f"trajectory record lacks {missing}")
        kwargs = {k: v for k, v in d.items() if k != "schema"}
        kwargs.setdefault("created", 0.0)
        try:
            return cls(**kwargs)
        except TypeError as exc:  # e.g. a null where a list belongs
            raise TrajectoryFormatError(
                f"trajectory record {d.get('id')!r} is malformed: {exc}"
            ) from exc
