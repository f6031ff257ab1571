"""Credit estimators by name: registration, typed configs, one entry point from trajectory groups.

An estimator is one module that registers itself::

    @dataclass
    class MyConfig:
        outcome_key: str | None = None

    @register_estimator("mine", MyConfig, needs=("probe_logprob",))
    def from_trajectories(batch: TurnBatch, config: MyConfig, inputs) -> tuple[list, dict]:
        ...  # per-token advantages aligned with each trajectory's tokens(), and diagnostics

Importing the module registers it (the built-ins are imported by ``creditgym.credit``); a config
may also name it ``"package.module:name"``, which imports the module on first use. The
function gets the flattened batch (:class:`creditgym.credit.adapter.TurnBatch`), its typed config
and the trainer's ``inputs``; ``needs`` names the inputs it cannot work without (``estimate``
refuses to call it when one is missing), ``optional`` those it uses when given.

A config file says ``credit: gigpo`` or ``credit: {name: gigpo, gamma: 0.9, similarity: 0.9}``;
:func:`make_config` turns either form into the estimator's typed dataclass (strict: an unknown
option is a ``ConfigError`` listing the valid ones). :func:`estimate` turns a list of trajectory
groups into per-token advantages aligned with each ``Trajectory.tokens()`` (zero wherever
``loss_mask()`` is 0) plus diagnostics.

Model-derived inputs are supplied by the trainer in ``inputs`` (``creditgym.trainers.credit_inputs``
provides them by name), each a mapping trajectory id -> one value per turn (or a list aligned
with the flattened trajectories). Built-in needs: ``igpo`` needs ``probe_logprob`` (probe mean
log-probs ``l_t``, see ``igpo_probe``); ``oprl`` needs ``logratio_sum`` (per turn
``sum(log pi_phi - log pi_ref)`` over its actions); ``pure`` optionally uses ``step_reward`` (PRM
step scores; without it the env's turn rewards).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from creditgym.config import from_dict
from creditgym.credit import adapter
from creditgym.credit._arrays import CreditInputError, mean_abs
from creditgym.errors import ConfigError
from creditgym.trajectory import Trajectory

EstimatorFn = Callable[[adapter.TurnBatch, Any, Mapping[str, Any]], tuple[list[np.ndarray], dict]]


@dataclass(frozen=True)
class Estimator:
    """One registered estimator."""

    name: str
    config: type
    """Its typed config dataclass (one class per estimator)."""
    fn: EstimatorFn
    """``(batch, config, inputs) -> (per-token advantages, diagnostics)``."""
    needs: tuple[str, ...] = ()
    """Inputs it cannot work without."""
    optional: tuple[str, ...] = ()
    """Inputs it uses when they are given."""


ESTIMATORS: dict[str, Estimator] = {}
"""Registered estimators by name, in registration order."""
CONFIG_NAMES: dict[type, str] = {}
"""Config class -> estimator name."""


def register_estimator(name: str, config: type, needs: Sequence[str] = (), *,
                       optional: Sequence[str] = ()) -> Callable[[EstimatorFn], EstimatorFn]:
    """Decorator registering ``fn(batch, config, inputs)`` as estimator ``name`` with its config
    dataclass. Registering a name or config class again from another function is an error
    (re-importing the same module replaces its own entry)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"register_estimator: name must be a non-empty string, got {name!r}")
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        raise ConfigError(f"register_estimator({name!r}): config must be a dataclass class, "
                          f"got {config!r}")
    for label, names in (("needs", needs), ("optional", optional)):
        if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"register_estimator({name!r}): {label} must be a sequence of input "
                              f"names such as ('probe_logprob',), got {names!r}")

    def decorate(fn: EstimatorFn) -> EstimatorFn:
        old = ESTIMATORS.get(name)
        if old is not None and _origin(old.fn) != _origin(fn):
            raise ConfigError(f"estimator {name!r} is already registered by {_origin(old.fn)}; "
                              f"choose another name for {_origin(fn)}")
        owner = CONFIG_NAMES.get(config)
        if owner is not None and owner != name:
            raise ConfigError(f"register_estimator({name!r}): config {config.__qualname__} already "
                              f"belongs to estimator {owner!r}; give each estimator its own class")
        if old is not None:
            CONFIG_NAMES.pop(old.config, None)
        ESTIMATORS[name] = Estimator(name, config, fn, tuple(needs), tuple(optional))
        CONFIG_NAMES[config] = name
        return fn

    return decorate


def unregister_estimator(name: str) -> None:
    """Remove estimator ``name`` (tests, reloading a plugin); unknown names are ignored."""
    old = ESTIMATORS.pop(name, None)
    if old is not None:
        CONFIG_NAMES.pop(old.config, None)


def _origin(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _choices() -> str:
    return ", ".join(ESTIMATORS) or "(none registered)"


def get_estimator(spec: str | Mapping[str, Any] | Any) -> Estimator:
    """The registered estimator of a name, a ``{name: ...}`` mapping or a typed config."""
    if isinstance(spec, Mapping):
        spec = spec.get("name")
        if not isinstance(spec, str):
            raise ConfigError(f"credit: a mapping needs 'name' (one of {_choices()})")
    if isinstance(spec, str):
        return _by_name(spec)
    name = CONFIG_NAMES.get(type(spec))
    if name is None:
        raise ConfigError(f"credit: {type(spec).__name__} is not a registered estimator config "
                          f"(registered estimators: {_choices()})")
    return ESTIMATORS[name]


def _by_name(name: str) -> Estimator:
    """A registered name, or ``"package.module:name"``: the module is imported (registering its
    estimators) on first use, as ``env.id`` does for environments."""
    if name in ESTIMATORS:
        return ESTIMATORS[name]
    module, sep, short = name.partition(":")
    if sep and module and short:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"credit: cannot import {module!r} for estimator {name!r} ({exc}); "
                              "put the folder that holds it on PYTHONPATH") from None
        if short in ESTIMATORS:
            return ESTIMATORS[short]
        raise ConfigError(f"credit: importing {module!r} registered no estimator {short!r}; "
                          f"registered: {_choices()}")
    raise ConfigError(f"credit: unknown estimator {name!r}; choose one of {_choices()}, or "
                      "'package.module:name' for one defined in a module of your own")


def make_config(spec: str | Mapping[str, Any]) -> Any:
    """``"gigpo"`` or ``{"name": "gigpo", **options}`` -> the estimator's typed config."""
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Mapping):
        options = dict(spec)
        name = options.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"credit: a mapping needs 'name' (one of {_choices()})")
    else:
        raise ConfigError(f"credit: expected a name or a mapping, got {type(spec).__name__}")
    return from_dict(get_estimator(name).config, options, where=f"credit.{name}")


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


def estimate(groups: Sequence[Sequence[Trajectory]], config: Any,
             inputs: Mapping[str, Any] | None = None) -> CreditResult:
    """Per-token advantages and diagnostics for trajectory groups under ``config`` (a typed
    config, a name or a ``{name: ..., options}`` mapping)."""
    if isinstance(config, (str, Mapping)):
        config = make_config(config)
    est = get_estimator(config)
    batch = adapter.flatten(groups)
    inputs = inputs or {}
    missing = [n for n in est.needs if n not in inputs]
    if missing:
        raise CreditInputError(
            f"{est.name} needs inputs[{missing[0]!r}] (one value per turn of each trajectory, "
            f"computed by the trainer), but it was not given (given: {sorted(inputs) or 'none'})")
    per_token, diag = est.fn(batch, config, inputs)
    if len(per_token) != len(batch.trajectories):
        raise CreditInputError(f"estimator {est.name!r} returned {len(per_token)} arrays for "
                               f"{len(batch.trajectories)} trajectories")
    diag = {**_common_diagnostics(batch, per_token), **diag, "estimator": est.name}
    return CreditResult(batch.trajectories, per_token, diag)


def _common_diagnostics(b, per_token: list[np.ndarray]) -> dict[str, float]:
    sizes = np.bincount(b.traj_group)
    nz = np.fromiter((np.any(a != 0) for a in per_token), dtype=bool, count=len(per_token))
    group_nz = np.bincount(b.traj_group, weights=nz.astype(float), minlength=sizes.size)
    flat = np.concatenate(per_token)
    mask = np.concatenate([t.loss_mask() for t in b.trajectories]).astype(bool)
    if flat.shape != mask.shape:
        raise CreditInputError(f"an estimator returned {flat.size} advantages for {mask.size} "
                               "tokens; return one array per trajectory aligned with tokens()")
    return {
        "groups": float(sizes.size),
        "trajectories": float(len(b.trajectories)),
        "turns": float(b.traj.size),
        "group_size_mean": float(sizes.mean()),
        "group_size_min": float(sizes.min()),
        "group_size_max": float(sizes.max()),
        "singleton_group_share": float((sizes == 1).mean()),
        "zero_adv_group_share": float((group_nz == 0).mean()),
        "mean_abs_adv_token": mean_abs(flat[mask]),
    }
