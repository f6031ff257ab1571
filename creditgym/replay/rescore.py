"""Re-score recorded trajectories: new environment rewards and/or new credit, into a new file.

Rewards are recomputed by re-stepping each trajectory through its environment rebuilt with
overridden keyword arguments (``env_overrides``, deep-merged into the recorded ``env_kwargs``;
``reward_overrides`` merge into the reward settings, e.g. ``{"em": 0, "f1": 1}``). The recorded
actions stay as they were generated, so an override that changes what the agent saw (its
observations, or where the episode ends) is refused: the recorded tokens would no longer match.
Rewards, per-turn metrics, valid flags, the outcome metrics and ``env_kwargs`` are updated.

Advantages are then recomputed with a credit estimator named as in the config files
(``"gigpo"`` or ``{"name": "gigpo", "gamma": 0.9}``) over the groups given by ``group``; failed
and zero-turn trajectories get no advantages. Without a credit estimator, advantages made stale
by new rewards are dropped.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from creditgym.errors import CreditGymError
from creditgym.replay.verify import EnvCache, MakeEnv, _json, replay, skip_reason
from creditgym.trajectory import Trajectory


class RescoreError(CreditGymError, ValueError):
    """A trajectory cannot be re-scored with the requested settings."""


@dataclass
class RescoreResult:
    """The re-scored trajectories and what happened to them."""

    trajectories: list[Trajectory]
    """All input trajectories, in order, as new objects (the inputs are not modified)."""
    rescored: int = 0
    """How many were re-stepped with new environment settings."""
    kept: list[str] = field(default_factory=list)
    """Ids left as recorded (failed rollouts, or nothing recorded to re-step)."""
    credit: dict[str, Any] | None = None
    """Diagnostics of the credit estimator, when one ran."""


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, recursing into mappings present in both."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def with_reward_overrides(
    env_kwargs: Mapping[str, Any], reward: Mapping[str, Any]
) -> dict[str, Any]:
    """``env_kwargs`` with ``reward`` merged into its reward settings: the top-level ``reward``
    keyword, or ``config["reward"]`` when the kwargs pass a ``config`` mapping and no ``reward``
    (a top-level ``reward`` would replace the config's whole reward mapping)."""
    kw = copy.deepcopy(dict(env_kwargs))
    target = kw["config"] if "reward" not in kw and isinstance(kw.get("config"), dict) else kw
    target["reward"] = {**(target.get("reward") or {}), **reward}
    return kw


def dotted_to_nested(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """``{"reward.f1": 1}`` -> ``{"reward": {"f1": 1}}``."""
    out: dict[str, Any] = {}
    for key, value in pairs.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise RescoreError(f"override {key!r} clashes with another override of {p!r}")
        node[leaf] = value
    return out


def _restep(t: Trajectory, envs: EnvCache, env_kwargs: dict[str, Any]) -> Trajectory:
    env = envs.get(t.env_id, env_kwargs)
    _, steps = replay(t, env)
    if len(steps) != t.n_turns:
        raise RescoreError(
            f"trajectory {t.id!r}: with the new settings the episode ends after turn "
            f"{len(steps) - 1}, but {t.n_turns} turns were recorded; re-score only settings that "
            "keep the episode's course (reward weights, penalties, costs)"
        )
    if t.observations:
        for turn, (rec, s) in enumerate(zip(t.observations, steps)):
            if rec != s.observation:
                raise RescoreError(
                    f"trajectory {t.id!r} turn {turn}: the new settings change the observation "
                    "the agent saw, so its recorded tokens would no longer match; re-score only "
                    "settings that change rewards, or re-run the rollout"
                )
    final = _json(steps[-1].info.get("metrics", {})) if steps else {}
    return replace(
        t,
        env_kwargs=env_kwargs,
        rewards=[s.reward for s in steps],
        valid=[bool(s.info.get("valid")) for s in steps],
        turn_metrics=[_json(s.info.get("metrics", {})) for s in steps],
        metrics={**t.metrics, **final},
        advantages=None,
    )


def group_trajectories(trajectories: Iterable[Trajectory]) -> list[list[Trajectory]]:
    """Trajectories grouped by ``group``, groups in order of first appearance."""
    groups: dict[str, list[Trajectory]] = {}
    for t in trajectories:
        groups.setdefault(t.group, []).append(t)
    return list(groups.values())


def rescore_trajectories(
    trajectories: Iterable[Trajectory],
    *,
    reward_overrides: Mapping[str, Any] | None = None,
    env_overrides: Mapping[str, Any] | None = None,
    credit: str | Mapping[str, Any] | None = None,
    credit_inputs: Mapping[str, Any] | None = None,
    make_env: MakeEnv | None = None,
    progress: bool = False,
) -> RescoreResult:
    """Re-step with new env settings (if any overrides) and recompute advantages (if ``credit``).

    ``env_overrides`` are nested keyword arguments deep-merged into each ``env_kwargs``;
    ``reward_overrides`` go to the reward settings (see ``with_reward_overrides``).
    ``credit_inputs`` are the model-derived inputs some estimators need (see
    ``creditgym.credit.registry``). Raises ``RescoreError`` when an override changes an
    episode's course.
    """
    from tqdm import tqdm

    out = [replace(t) for t in trajectories]
    result = RescoreResult(out)
    if reward_overrides or env_overrides:
        with EnvCache(make_env) as envs:
            for i, t in enumerate(tqdm(out, desc="rescore", unit="traj", disable=not progress)):
                if skip_reason(t) is not None:
                    result.kept.append(t.id)
                    continue
                kwargs = deep_merge(t.env_kwargs, env_overrides or {})
                if reward_overrides:
                    kwargs = with_reward_overrides(kwargs, reward_overrides)
                out[i] = _restep(t, envs, kwargs)
                result.rescored += 1
    if credit is not None:
        from creditgym.credit.registry import estimate

        usable = [t for t in out if t.error is None and t.n_turns > 0]
        for t in out:
            t.advantages = None
        if usable:
            estimated = estimate(group_trajectories(usable), credit, credit_inputs)
            estimated.assign()
            result.credit = dict(estimated.diagnostics)
    return result
