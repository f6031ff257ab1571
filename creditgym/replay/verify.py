"""Re-step recorded trajectories through their environments and report where replay diverges.

Environments are deterministic (same task, seed and action texts give the same observations and
rewards), so a record can be checked by rebuilding its environment with
``gymnasium.make(env_id, **env_kwargs)``, resetting it with the recorded seed and task, and
stepping every recorded action. Per turn the observation text, reward (absolute tolerance 1e-9),
valid flag, anchor, metrics and tool calls (where recorded) and the end of the episode are
compared; the first difference of each trajectory is reported as a ``Divergence``. Trajectories
that cannot be replayed (the rollout failed, or no env id / action texts were recorded) are
reported with ``kind="skipped"``.

One environment is built per distinct ``(env_id, env_kwargs)`` and reused: building a SearchEnv
opens a retriever, which is far slower than resetting one.

Trajectory files are untrusted data: environments are built through an
:class:`~creditgym.replay.trust.EnvPolicy` (by default: only ids registered by creditgym, and no
path or URL named by the file), and a refusal (``UntrustedFileError``) stops the run instead of
being reported as a divergence.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Self

from creditgym.errors import UntrustedFileError
from creditgym.trajectory import Trajectory

REWARD_ATOL = 1e-9
"""Absolute tolerance when comparing rewards and metric values."""

MakeEnv = Callable[[str, dict[str, Any]], Any]
"""``make_env(env_id, env_kwargs) -> env``: builds an environment for replay."""


@dataclass(frozen=True)
class Divergence:
    """Where the replay of one trajectory first differed from its record (or why it was skipped)."""

    trajectory_id: str
    """Id of the trajectory."""
    turn: int | None
    """0-based turn whose step differed (None: before stepping, e.g. building the env)."""
    field: str
    """What differed: observation, reward, valid, anchor, metrics, tool_calls, ended, ...;
    or for a skipped trajectory the reason's kind (error, env_id, actions)."""
    recorded: Any
    """The recorded value (or the skip reason)."""
    replayed: Any
    """The value the replay produced (None when skipped)."""
    kind: Literal["diverged", "skipped"] = "diverged"
    """``diverged``: replay differs from the record; ``skipped``: the record cannot be replayed."""

    def describe(self, width: int = 160) -> str:
        """One line for a terminal."""
        where = f"turn {self.turn}" if self.turn is not None else "setup"
        if self.kind == "skipped":
            return f"{self.trajectory_id}: skipped ({self.field}: {_short(self.recorded, width)})"
        return (
            f"{self.trajectory_id}: {where}: {self.field} differs: recorded "
            f"{_short(self.recorded, width)} vs replayed {_short(self.replayed, width)}"
        )


def _short(value: Any, width: int) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def default_make_env(env_id: str, env_kwargs: dict[str, Any]) -> Any:
    """``gymnasium.make(env_id, **env_kwargs)`` for creditgym's own ids, refusing paths and URLs
    named by the record (``EnvPolicy()``; build your own policy to allow more)."""
    from creditgym.replay.trust import EnvPolicy

    return EnvPolicy().make_env(env_id, copy.deepcopy(env_kwargs))


class EnvCache:
    """One open environment per distinct ``(env_id, env_kwargs)``; close it when done."""

    def __init__(self, make_env: MakeEnv | None = None) -> None:
        self._make = make_env or default_make_env
        self._envs: dict[tuple[str, str], Any] = {}

    def get(self, env_id: str, env_kwargs: dict[str, Any]) -> Any:
        key = (env_id, json.dumps(env_kwargs, sort_keys=True, default=str))
        if key not in self._envs:
            self._envs[key] = self._make(env_id, env_kwargs)
        return self._envs[key]

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class StepRecord:
    """What one replayed step returned."""

    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


def skip_reason(t: Trajectory) -> Divergence | None:
    """Why ``t`` cannot be replayed, or None when it can."""
    if t.error is not None:
        return Divergence(t.id, None, "error", t.error, None, "skipped")
    if not t.env_id:
        return Divergence(t.id, None, "env_id", "no env_id recorded", None, "skipped")
    if len(t.actions) != t.n_turns:
        return Divergence(t.id, None, "actions", "action texts not recorded", None, "skipped")
    return None


def replay(
    t: Trajectory, env: Any, env_kwargs: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[StepRecord]]:
    """Reset ``env`` as ``t`` was and step its recorded actions until they run out or the
    episode ends; returns the reset info and the steps."""
    base = getattr(env, "unwrapped", env)  # skip gymnasium's checker wrappers: we compare ourselves
    _, info = base.reset(seed=t.seed, options={"task": t.task})
    steps = []
    for action in t.actions:
        obs, reward, terminated, truncated, step_info = base.step(action)
        steps.append(StepRecord(obs, float(reward), bool(terminated), bool(truncated), step_info))
        if terminated or truncated:
            break
    return info, steps


def first_divergence(
    t: Trajectory, reset_info: dict[str, Any], steps: list[StepRecord]
) -> Divergence | None:
    """The first difference between ``t`` and its replay, or None."""
    if t.anchors and t.n_turns and _json(reset_info.get("anchor")) != t.anchors[0]:
        return Divergence(t.id, 0, "anchor", t.anchors[0], _json(reset_info.get("anchor")))
    for turn, s in enumerate(steps):
        checks: list[tuple[str, Any, Any, bool]] = [
            ("reward", t.rewards[turn], s.reward, abs(t.rewards[turn] - s.reward) <= REWARD_ATOL),
            (
                "valid",
                bool(t.valid[turn]),
                bool(s.info.get("valid")),
                bool(t.valid[turn]) == bool(s.info.get("valid")),
            ),
        ]
        if t.observations:
            rec = t.observations[turn]
            checks.insert(0, ("observation", rec, s.observation, rec == s.observation))
        if turn + 1 < t.n_turns:
            rec, got = t.anchors[turn + 1], _json(s.info.get("anchor"))
            checks.append(("anchor", rec, got, rec == got))
        if t.turn_metrics:
            rec, got = t.turn_metrics[turn], _json(s.info.get("metrics", {}))
            checks.append(("metrics", rec, got, _close(rec, got)))
        if t.tool_calls:
            rec, got = t.tool_calls[turn], _json(s.info.get("tool_calls", []))
            checks.append(("tool_calls", rec, got, rec == got))
        for name, rec, got, same in checks:
            if not same:
                return Divergence(t.id, turn, name, rec, got)
        ended = s.terminated or s.truncated
        last = turn == t.n_turns - 1
        if ended and not last:
            return Divergence(
                t.id,
                turn,
                "ended",
                f"episode goes on for {t.n_turns} turns",
                f"terminated={s.terminated} truncated={s.truncated} after turn {turn}",
            )
        if last:
            if s.terminated != t.terminated:
                return Divergence(t.id, turn, "terminated", t.terminated, s.terminated)
            # The rollout may also truncate on its own (context budget), so only an env
            # truncation the record lacks is a difference.
            if s.truncated and not t.truncated:
                return Divergence(t.id, turn, "truncated", t.truncated, s.truncated)
    return None


def verify_trajectories(
    trajectories: Iterable[Trajectory], *, make_env: MakeEnv | None = None, progress: bool = False
) -> list[Divergence]:
    """Re-step each trajectory; one ``Divergence`` per trajectory that differs or was skipped
    (an empty list: every replayable trajectory replayed exactly)."""
    from tqdm import tqdm

    trajectories = list(trajectories)
    out: list[Divergence] = []
    with EnvCache(make_env) as envs:
        for t in tqdm(trajectories, desc="verify", unit="traj", disable=not progress):
            skipped = skip_reason(t)
            if skipped is not None:
                out.append(skipped)
                continue
            try:
                env = envs.get(t.env_id, t.env_kwargs)
                reset_info, steps = replay(t, env)
            except UntrustedFileError:
                raise
            except Exception as exc:  # noqa: BLE001 - a replay that raises is a divergence, not a crash
                out.append(
                    Divergence(t.id, None, "exception", None, f"{type(exc).__name__}: {exc}")
                )
                continue
            d = first_divergence(t, reset_info, steps)
            if d is not None:
                out.append(d)
    return out


def _json(value: Any) -> Any:
    """``value`` as it reads back from a JSON record (tuples become lists, ...)."""
    return json.loads(json.dumps(value, default=str))


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=0.0, abs_tol=REWARD_ATOL) or (
            math.isnan(a) and math.isnan(b)
        )
    return a == b
