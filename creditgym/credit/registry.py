"""Credit estimators by name: typed configs and one entry point from trajectory groups.

A config file says ``credit: gigpo`` or ``credit: {name: gigpo, gamma: 0.9, similarity: 0.9}``;
:func:`make_config` turns either form into the estimator's typed dataclass (strict: an unknown
option is a ``ConfigError`` listing the valid ones). :func:`estimate` turns a list of trajectory
groups into per-token advantages aligned with each ``Trajectory.tokens()`` (zero wherever
``loss_mask()`` is 0) plus diagnostics.

Model-derived inputs are supplied by the trainer in ``inputs``, each a mapping trajectory id ->
one value per turn (or a list aligned with the flattened trajectories):

* ``igpo``: ``inputs["probe_logprob"]``, the probe mean log-probs ``l_t`` (see ``igpo_probe``);
* ``oprl``: ``inputs["logratio_sum"]``, per turn ``sum(log pi_phi - log pi_ref)`` over its actions;
* ``pure``: ``inputs["step_reward"]`` (PRM step scores); without it the env's turn rewards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from creditgym.config import from_dict
from creditgym.credit import adapter, gigpo, grpo, igpo, oprl, pure, rloo, tempo
from creditgym.credit._arrays import reverse_discounted_sum, row_layout
from creditgym.errors import ConfigError
from creditgym.trajectory import Trajectory


@dataclass
class GRPOConfig:
    """GRPO: episode-level group z-score."""

    norm: Literal["std", "mean"] = "std"
    """``std``: (R - mean)/(std + eps); ``mean``: R - mean."""
    outcome_key: str | None = None
    """Metric used as R (e.g. ``em``); null: the episode return (sum of turn rewards)."""


@dataclass
class RLOOConfig:
    """RLOO: leave-one-out baseline on the episode outcome."""

    outcome_key: str | None = None
    """Metric used as R; null: the episode return."""


@dataclass
class GiGPOConfig:
    """GiGPO: episode level plus anchor-state step level (defaults: the paper's scripts)."""

    gamma: float = 0.95
    """Discount of the step returns."""
    step_weight: float = 1.0
    """Weight of the step-level advantage in the total."""
    norm: Literal["std", "mean"] = "std"
    """``std`` for search/ALFWorld, ``mean`` for WebShop."""
    invalid_penalty: float = 0.0
    """Subtracted on invalid turns (0.1 ALFWorld/WebShop, 0.01 search in the paper)."""
    episode_stats: Literal["trajectory", "step"] = "trajectory"
    """Episode mean/std over trajectories (paper) or over all turn rows (verl-agent code)."""
    similarity: float | None = None
    """difflib ratio threshold in (0, 1) for similar text anchors (0.9 for search); null: exact."""

    def __post_init__(self) -> None:
        if self.similarity is not None and not 0.0 < self.similarity < 1.0:
            raise ConfigError(f"gigpo.similarity must be in (0, 1) or null, got {self.similarity}")


@dataclass
class IGPOConfig:
    """IGPO: information-gain turn rewards from probe log-probs (``inputs["probe_logprob"]``)."""

    gamma: float = 1.0
    """Discount of the reverse sum of normalised turn rewards."""
    gain: Literal["log_prob_diff", "prob_diff"] = "log_prob_diff"
    """IG on log-probs (official script) or on probabilities (paper)."""
    norm: Literal["separate", "joint"] = "separate"
    """Outcomes and IG values z-scored in separate pools or one."""
    outcome_key: str | None = None
    """Metric rewarding the last turn (e.g. ``f1``); null: the episode return."""


@dataclass
class TEMPOConfig:
    """TEMPO: prefix-tree token advantages over whole responses (observations included)."""

    outcome_key: str | None = None
    """Metric used as R; null: the episode return."""


@dataclass
class OPRLConfig:
    """OPRL: implicit-PRM step rewards (``inputs["logratio_sum"]``) with leave-one-out baselines."""

    beta: float = 0.05
    """Scale of the PRM log-ratios."""
    step_weight: float = 1.0
    """Weight of the step-level advantage."""
    success_key: str | None = None
    """Metric marking success for the DPO pairs; null: episode return > 0."""


@dataclass
class PUREConfig:
    """PURE: min-form process returns plus an RLOO outcome advantage."""

    temperature: float = 0.1
    """Softmax temperature of the min-form weights."""
    outcome_weight: float = 1.0
    """Weight of the RLOO advantage on the outcome (0: process rewards only)."""
    outcome_key: str | None = None
    """Metric used as the verifiable outcome; null: the episode return."""


@dataclass(frozen=True)
class CreditResult:
    """Per-token advantages (aligned with ``tokens()``) of ``trajectories``, and diagnostics."""

    trajectories: list[Trajectory]
    advantages: list[np.ndarray]
    diagnostics: dict[str, Any]

    def assign(self) -> None:
        """Store each array on its trajectory's ``advantages`` field."""
        for t, a in zip(self.trajectories, self.advantages):
            t.advantages = a.tolist()


def _grpo(b, cfg: GRPOConfig, inputs):
    a = grpo.advantages(b.traj_group, b.outcome(cfg.outcome_key), norm=cfg.norm)
    return adapter.turns_to_tokens(b, a[b.traj]), {"mean_abs_episode": _mabs(a)}


def _rloo(b, cfg: RLOOConfig, inputs):
    a = rloo.advantages(b.traj_group, b.outcome(cfg.outcome_key))
    return adapter.turns_to_tokens(b, a[b.traj]), {"mean_abs_episode": _mabs(a)}


def _gigpo(b, cfg: GiGPOConfig, inputs):
    r = gigpo.advantages(
        b.group, b.traj, b.anchors, b.reward, valid=b.valid, gamma=cfg.gamma,
        step_weight=cfg.step_weight, norm=cfg.norm, invalid_penalty=cfg.invalid_penalty,
        episode_stats=cfg.episode_stats, similarity=cfg.similarity)
    return adapter.turns_to_tokens(b, r.total), dict(r.diagnostics)


def _igpo(b, cfg: IGPOConfig, inputs):
    l = adapter.per_turn_input("probe_logprob", inputs, b, "igpo")
    starts = np.cumsum(b.n_turns) - b.n_turns
    seqs = np.split(l, starts[1:])
    flat, _ = igpo._flat_turn_advantages(b.traj_group, seqs, b.outcome(cfg.outcome_key),
                                         cfg.gamma, cfg.gain, cfg.norm)
    return adapter.turns_to_tokens(b, flat), {"mean_abs_turn": _mabs(flat)}


def _tempo(b, cfg: TEMPOConfig, inputs):
    toks, masks = adapter.responses(b)
    adv = tempo.token_advantages(b.traj_group, toks, b.outcome(cfg.outcome_key),
                                 policy_mask=masks)
    out = [np.concatenate([np.zeros(len(t.prompt_ids)), a]) for t, a in zip(b.trajectories, adv)]
    flat = np.concatenate(adv) if adv else np.zeros(0)
    return out, {"mean_abs_token": _mabs(flat[np.concatenate(masks)])}


def _success(b, key):
    return b.returns > 0 if key is None else b.outcome(key) > 0.5


def _oprl(b, cfg: OPRLConfig, inputs):
    q = adapter.per_turn_input("logratio_sum", inputs, b, "oprl")
    s = oprl.step_rewards(q, beta=cfg.beta)
    a = oprl.advantages(b.group, b.traj, b.returns, s, step_weight=cfg.step_weight)
    loss = oprl.trajectory_dpo_loss(b.group, b.traj, q, _success(b, cfg.success_key).astype(float),
                                    beta=cfg.beta)
    return adapter.turns_to_tokens(b, a), {"dpo_loss": loss, "mean_abs_turn": _mabs(a)}


def _pure(b, cfg: PUREConfig, inputs):
    if inputs and "step_reward" in inputs:
        s = adapter.per_turn_input("step_reward", inputs, b, "pure")
    else:
        s = b.reward
    m = pure.min_form(s, temperature=cfg.temperature, lengths=b.n_turns)
    rows = row_layout(b.group, b.traj)
    proc = reverse_discounted_sum(m, rows, 1.0)
    out_adv = rloo.advantages(b.traj_group, b.outcome(cfg.outcome_key))
    a = proc + cfg.outcome_weight * out_adv[b.traj]
    return adapter.turns_to_tokens(b, a), {"mean_abs_process": _mabs(proc),
                                           "mean_abs_episode": _mabs(out_adv)}


def _mabs(x: np.ndarray) -> float:
    return float(np.abs(x).mean()) if x.size else 0.0


ESTIMATORS: dict[str, tuple[type, Callable[..., Any]]] = {
    "grpo": (GRPOConfig, _grpo),
    "rloo": (RLOOConfig, _rloo),
    "gigpo": (GiGPOConfig, _gigpo),
    "igpo": (IGPOConfig, _igpo),
    "tempo": (TEMPOConfig, _tempo),
    "oprl": (OPRLConfig, _oprl),
    "pure": (PUREConfig, _pure),
}
CONFIG_NAMES = {cls: name for name, (cls, _) in ESTIMATORS.items()}


def make_config(spec: str | Mapping[str, Any]) -> Any:
    """``"gigpo"`` or ``{"name": "gigpo", **options}`` -> the estimator's typed config."""
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Mapping):
        options = dict(spec)
        name = options.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"credit: a mapping needs 'name' (one of {', '.join(ESTIMATORS)})")
    else:
        raise ConfigError(f"credit: expected a name or a mapping, got {type(spec).__name__}")
    if name not in ESTIMATORS:
        raise ConfigError(f"credit: unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    return from_dict(ESTIMATORS[name][0], options, where=f"credit.{name}")


def estimate(groups: Sequence[Sequence[Trajectory]], config: Any,
             inputs: Mapping[str, Any] | None = None) -> CreditResult:
    """Per-token advantages and diagnostics for trajectory groups under ``config``."""
    if isinstance(config, (str, Mapping)):
        config = make_config(config)
    name = CONFIG_NAMES.get(type(config))
    if name is None:
        raise ConfigError(f"credit: {type(config).__name__} is not an estimator config")
    batch = adapter.flatten(groups)
    per_token, diag = ESTIMATORS[name][1](batch, config, inputs)
    diag = {**_common_diagnostics(batch, per_token), **diag, "estimator": name}
    return CreditResult(batch.trajectories, per_token, diag)


def _common_diagnostics(b, per_token: list[np.ndarray]) -> dict[str, float]:
    sizes = np.bincount(b.traj_group)
    nz = np.fromiter((np.any(a != 0) for a in per_token), dtype=bool, count=len(per_token))
    group_nz = np.bincount(b.traj_group, weights=nz.astype(float), minlength=sizes.size)
    flat = np.concatenate(per_token)
    mask = np.concatenate([t.loss_mask() for t in b.trajectories]).astype(bool)
    return {
        "groups": float(sizes.size),
        "trajectories": float(len(b.trajectories)),
        "turns": float(b.traj.size),
        "group_size_mean": float(sizes.mean()),
        "group_size_min": float(sizes.min()),
        "group_size_max": float(sizes.max()),
        "singleton_group_share": float((sizes == 1).mean()),
        "zero_adv_group_share": float((group_nz == 0).mean()),
        "mean_abs_adv_token": _mabs(flat[mask]),
    }
