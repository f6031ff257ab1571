"""Model-derived inputs of the credit estimators, provided by name.

An estimator declares what it needs (``register_estimator(..., needs=("probe_logprob",))``, see
``creditgym.credit.registry``); a provider registered here under the same name computes it from
the trainer's state::

    @register_input("probe_logprob")
    def probe_logprob(trainer, trajs) -> tuple[dict[str, list[float]], dict[str, float]]:
        ...  # (trajectory id -> one value per turn, metrics for the iteration's log row)

:func:`credit_inputs` calls the providers of exactly the estimator's ``needs`` (and of its
``optional`` inputs that have a provider) and returns ``({name: values_by_traj_id}, metrics)``,
or ``(None, {})`` when the estimator needs nothing. A need without a provider is a
``ConfigError`` naming it and the registered providers (:func:`input_problems` finds it before a
run starts). A provider may come with ``setup(trainer)``, which :func:`setup_inputs` runs once
after the policy is loaded (the PRM: a copy of the policy with its optimiser and schedule, which
the trainer checkpoints as ``trainer.prm``).

The trainer is duck-typed. The built-in providers read: ``probe_logprob``: ``renderer.encode``,
``backend.score`` and optionally ``probe_format`` (an ``igpo_probe.ProbeFormat``; default: the
answer forced between ``<answer>`` and ``</answer>``); ``logratio_sum``: ``model``, ``cfg``
(``prm_lr``, ``rl.iterations``, ``optim``), ``credit`` (``beta``, ``success_key``), ``pad_id``,
and the ``prm``, ``prm_optimizer``, ``prm_scheduler`` its setup creates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from creditgym.errors import ConfigError
from creditgym.trajectory import Trajectory

Values = dict[str, list[float]]
Provider = Callable[[Any, Sequence[Trajectory]], tuple[Values, dict[str, float]]]


@dataclass(frozen=True)
class InputProvider:
    """One registered input provider."""

    name: str
    provide: Provider
    """``(trainer, trajectories) -> (values by trajectory id, metrics)``."""
    setup: Callable[[Any], None] | None = None
    """Run once per trainer before the first iteration (and before a resume loads checkpoints)."""


PROVIDERS: dict[str, InputProvider] = {}
"""Registered providers by input name."""


def register_input(name: str, *, setup: Callable[[Any], None] | None = None
                   ) -> Callable[[Provider], Provider]:
    """Decorator registering ``provide(trainer, trajs)`` as the provider of input ``name``.
    Registering a name again from another function is an error (a re-import replaces its own)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"register_input: name must be a non-empty string, got {name!r}")

    def decorate(fn: Provider) -> Provider:
        old = PROVIDERS.get(name)
        if old is not None and _origin(old.provide) != _origin(fn):
            raise ConfigError(f"input {name!r} is already provided by {_origin(old.provide)}; "
                              f"choose another name for {_origin(fn)}")
        PROVIDERS[name] = InputProvider(name, fn, setup)
        return fn

    return decorate


def unregister_input(name: str) -> None:
    """Remove the provider of ``name`` (tests, reloading a plugin); unknown names are ignored."""
    PROVIDERS.pop(name, None)


def _origin(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _wanted(estimator: Any, extra: Sequence[str] = ()) -> tuple[Any, list[str]]:
    from creditgym.credit.registry import get_estimator

    est = get_estimator(estimator)
    names = [*est.needs, *(n for n in est.optional if n in PROVIDERS and n not in est.needs)]
    return est, names + [n for n in dict.fromkeys(extra) if n not in names]


def input_problems(estimator: Any, extra: Sequence[str] = ()) -> list[str]:
    """Why the trainer cannot provide ``estimator``'s needs (a name, spec or typed config) and
    the ``extra`` inputs to record (``record_inputs``); empty when it can."""
    from creditgym.credit.registry import get_estimator

    est = get_estimator(estimator)
    known = ", ".join(PROVIDERS) or "none"
    return [f"credit={est.name}: needs input {n!r}, but no provider is registered for it; "
            f"register one with creditgym.trainers.credit_inputs.register_input({n!r}) "
            f"(registered: {known})"
            for n in est.needs if n not in PROVIDERS] + [
        f"record_inputs: no provider of input {n!r} is registered (registered: {known})"
        for n in extra if n not in PROVIDERS]


def setup_inputs(trainer: Any, estimator: Any, extra: Sequence[str] = ()) -> None:
    """Run the ``setup`` of every provider the estimator will use: once, after the warm start
    of a new run (the PRM copies the warm-started policy), or before a resumed run restores
    its checkpoints."""
    problems = input_problems(estimator, extra)
    if problems:
        raise ConfigError("; ".join(problems))
    _, names = _wanted(estimator, extra)
    for name in names:
        if PROVIDERS[name].setup is not None:
            PROVIDERS[name].setup(trainer)


def credit_inputs(trainer: Any, estimator: Any, trajs: Sequence[Trajectory],
                  extra: Sequence[str] = ()) -> tuple[dict[str, Values] | None, dict[str, float]]:
    """The inputs ``estimator`` (a name, spec or typed config) needs for ``trajs`` and the
    ``extra`` ones to record, by name, and the providers' metrics; ``(None, {})`` when there
    are none."""
    problems = input_problems(estimator, extra)
    if problems:
        raise ConfigError("; ".join(problems))
    _, names = _wanted(estimator, extra)
    if not names:
        return None, {}
    inputs: dict[str, Values] = {}
    metrics: dict[str, float] = {}
    for name in names:
        values, m = PROVIDERS[name].provide(trainer, trajs)
        inputs[name] = values
        metrics.update(m)
    return inputs, metrics


INPUT_METRIC_PREFIX = "input/"
"""Turn-metrics key prefix under which a run records the inputs its credit used
(``turn_metrics[t]["input/probe_logprob"]``), so ``creditgym credit-bench`` can score the
estimator on the run's ``rollouts.jsonl`` later without the model."""


def record_inputs(trajs: Sequence[Trajectory], inputs: dict[str, Values] | None) -> None:
    """Write each input value into its trajectory's turn metrics (``INPUT_METRIC_PREFIX`` +
    name); trajectories or inputs that do not have one value per turn are left as they are."""
    for name, values in (inputs or {}).items():
        if not isinstance(values, dict):
            continue
        for t in trajs:
            per_turn = values.get(t.id)
            if per_turn is None or len(per_turn) != t.n_turns or len(t.turn_metrics) != t.n_turns:
                continue
            for metrics, value in zip(t.turn_metrics, per_turn):
                metrics[INPUT_METRIC_PREFIX + name] = float(value)


# ------------------------------------------------------------------------ built-in providers


@register_input("probe_logprob")
def probe_logprob(trainer: Any, trajs: Sequence[Trajectory]) -> tuple[Values, dict[str, float]]:
    """IGPO's probes: mean log-prob of the gold answer teacher-forced before each turn, under the
    current policy (scored through the rollout backend, no gradient)."""
    from creditgym.credit.igpo_probe import ProbeFormat, probe_logprobs

    fmt = getattr(trainer, "probe_format", None) or ProbeFormat(
        context_suffix="", answer_prefix="<answer>", answer_suffix="</answer>")
    probes = probe_logprobs(trajs, trainer.renderer.encode, trainer.backend.score, fmt=fmt)
    return {t.id: [float(x) for x in p] for t, p in zip(trajs, probes)}, {}


def _setup_prm(trainer: Any) -> None:
    """The implicit PRM starts as a copy of the (warm-started) policy with its own optimiser
    (``trainer.trainable_copy()`` when the trainer has one: sharded like the policy)."""
    import copy

    from creditgym.trainers.optim import make_optimizer

    make_copy = getattr(trainer, "trainable_copy", None)
    trainer.prm = make_copy() if make_copy is not None else copy.deepcopy(trainer.model)
    trainer.prm_optimizer, trainer.prm_scheduler = make_optimizer(
        trainer.prm, trainer.cfg.optim(trainer.cfg.prm_lr, trainer.cfg.rl.iterations))


@register_input("logratio_sum", setup=_setup_prm)
def logratio_sum(trainer: Any, trajs: Sequence[Trajectory]) -> tuple[Values, dict[str, float]]:
    """OPRL's per-turn ``sum(log pi_phi - log pi_ref)`` over each turn's actions, after one DPO
    step of the implicit PRM on this batch (the "after" schedule); metrics ``prm/*``."""
    import numpy as np

    from creditgym.trainers.dpo import prm_update

    key = getattr(trainer.credit, "success_key", None)
    if key is None:  # the PRM's pairs are (successful, failed) inside a group
        key = "success"
        for t in trajs:
            t.metrics.setdefault("success", float(bool(t.success)))
    out = prm_update(trainer.prm, trainer.prm_optimizer, trainer.prm_scheduler, trajs,
                     pad_id=trainer.pad_id, beta=getattr(trainer.credit, "beta", 0.05),
                     success_key=key)
    per_traj: Values = {}
    for traj_id, q in zip(out.traj, np.asarray(out.logratio_sum)):
        per_traj.setdefault(traj_id, []).append(float(q))
    return per_traj, {f"prm/{k}": v for k, v in out.metrics.items()}
