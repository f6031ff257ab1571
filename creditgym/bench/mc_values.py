"""Monte-Carlo turn values of recorded trajectories: how much each turn changed the expected return.

For a recorded trajectory with turns ``0..T-1`` and rewards ``r_t``, the state before turn ``t``
(``s_t``) is rebuilt exactly (environments are deterministic: reset with the recorded seed and
task, re-step the recorded actions; the recorded token ids are kept), and ``K`` continuations are
sampled from it with a policy (any ``PolicyBackend``: the transformers backend of a model folder,
or a scripted backend-like object). ``V(s_t)`` is the mean of their returns, a return being the
sum of rewards from turn ``t`` on (the trainer's outcome). Turn ``t``'s value is the VinePPO
advantage ``r_t + V(s_{t+1}) - V(s_t)`` with ``V(s_T) = 0`` (the episode is over); with the usual
sparse reward (only the last turn pays) that is ``V(s_{t+1}) - V(s_t)``, the last turn's
``V(s_T)`` being the recorded final reward. ``attach`` stores it as ``turn_metrics[t]["mc/value"]``
(``credit_bench.MC_KEY``), where the credit bench reads it for ``spearman_mc``.

Continuations run through the rollout itself (``agents.rollout.rollout_one`` with
``prefix``/``prefix_turns``: same generation batcher, chat renderer, context budget and stop
handling as training), the ``K`` of one state batched in lockstep. Continuation ``k`` from state
``t`` of trajectory ``id`` samples with seed ``stream_seed(seed, "mc", id, t, k)`` (a stable hash),
so values do not depend on run order, batching or the budget. States are visited in a fixed order
(trajectory order, then turn order) and the work stops once ``budget_s`` seconds are spent: a turn
has a value only when both of its states were estimated, so a cut leaves later turns without one.

Environments are built only through a ``replay.trust.EnvPolicy`` (ids registered by creditgym or
allowed modules; ``env_kwargs`` checked), as ``replay rescore`` builds them. Before a trajectory is
continued its token ids are checked against the renderer's (prompt and observation deltas): a
continuation with another tokenizer than the one that made the record would extend a sequence the
policy cannot read, so that is an error naming the fix. A continuation that fails (environment
raised, backend error, the replay diverged) leaves its state without a value and is reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from creditgym.agents.backend import PolicyBackend, SamplingParams
from creditgym.agents.chat import ChatRenderer
from creditgym.agents.generation_batcher import GenerationBatcher
from creditgym.agents.rollout import EnvPool, RolloutConfig, rollout_one, stream_seed
from creditgym.bench.credit_bench import MC_KEY
from creditgym.envs.task import Task
from creditgym.errors import ConfigError
from creditgym.replay.trust import EnvPolicy
from creditgym.replay.verify import skip_reason
from creditgym.trajectory import Trajectory


@dataclass
class MCSettings:
    """How continuations are sampled."""

    k: int = 8
    """Continuations per state."""
    temperature: float = 1.0
    """Sampling temperature (the policy as it samples in training: 1.0)."""
    max_new_tokens: int | None = None
    """Most tokens per action; None: the longest recorded action (a lower bound of the budget
    the records were sampled with; exactly it when an action was cut there)."""
    max_context_tokens: int = 4096
    """Prompt + all turns may not exceed this (the rollout's context budget); an in-process
    backend's own ``max_context`` caps it."""
    seed: int = 0
    """Folded with (trajectory id, turn, continuation) into each continuation's seed."""
    budget_s: float | None = None
    """Wall seconds after which no further state is started (None: no limit)."""

    def check(self) -> None:
        problems = []
        if self.k < 1:
            problems.append(f"k={self.k} must be >= 1")
        if not self.temperature >= 0:
            problems.append(f"temperature={self.temperature} must be >= 0 (0: greedy)")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            problems.append(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.max_context_tokens <= (self.max_new_tokens or 1):
            problems.append(f"max_context_tokens={self.max_context_tokens} must exceed "
                            f"max_new_tokens={self.max_new_tokens}")
        if self.budget_s is not None and not self.budget_s > 0:
            problems.append(f"budget_s={self.budget_s} must be > 0 seconds")
        if problems:
            raise ConfigError("Monte-Carlo settings: " + "; ".join(problems))


@dataclass
class MCResult:
    """State and turn values, aligned with the trajectories given (None: not estimated)."""

    state_values: list[list[float | None]]
    """Per trajectory, ``V(s_t)`` per turn: the mean return of the continuations from ``s_t``."""
    turn_values: list[list[float | None]]
    """Per trajectory, turn ``t``'s value ``r_t + V(s_{t+1}) - V(s_t)`` (``V(s_T) = 0``)."""
    states_total: int = 0
    """States the trajectories have (one per turn of every continuable trajectory)."""
    states_done: int = 0
    """States visited (estimated, or failed) before the budget ran out."""
    stopped_early: bool = False
    """The budget ran out before every state was estimated."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(trajectory id, why) for trajectories that cannot be continued (no env id, no actions)."""
    failed: list[tuple[str, int, str]] = field(default_factory=list)
    """(trajectory id, turn, error) for states whose continuations failed."""
    seconds: float = 0.0

    @property
    def turns_valued(self) -> int:
        return sum(v is not None for values in self.turn_values for v in values)


def turn_values(state_values: Sequence[float | None], rewards: Sequence[float]
                ) -> list[float | None]:
    """``r_t + V(s_{t+1}) - V(s_t)`` per turn, ``V(s_T) = 0``; None where a needed V is None."""
    out: list[float | None] = []
    for t, v in enumerate(state_values):
        after = state_values[t + 1] if t + 1 < len(state_values) else 0.0
        out.append(None if v is None or after is None else float(rewards[t]) + after - v)
    return out


def attach(trajectories: Sequence[Trajectory], result: MCResult) -> int:
    """Store each turn value as ``turn_metrics[t]["mc/value"]`` (in place); returns how many.
    Turns without a value get no key (and lose a stale one)."""
    count = 0
    for t, values in zip(trajectories, result.turn_values, strict=True):
        if len(t.turn_metrics) != t.n_turns:
            t.turn_metrics = [{} for _ in range(t.n_turns)]
        for metrics, value in zip(t.turn_metrics, values):
            metrics.pop(MC_KEY, None)
            if value is not None:
                metrics[MC_KEY] = value
                count += 1
    return count


def check_tokens(traj: Trajectory, renderer: ChatRenderer) -> None:
    """Raise ``ConfigError`` unless ``renderer`` makes the record's prompt ids from its prompt
    messages and each observation's ids from its text: the continuation appends ids the same way."""
    where = None
    if traj.prompt_messages and renderer.prompt_ids(traj.prompt_messages) != traj.prompt_ids:
        where = "its prompt"
    for turn in range(traj.n_turns):
        ids = traj.observation_ids[turn]
        if where is None and ids and traj.observations and \
                renderer.observation_ids(traj.observations[turn], traj.action_ids[turn]) != ids:
            where = f"the observation of turn {turn}"
    if where is not None:
        raise ConfigError(
            f"trajectory {traj.id!r}: {where} has token ids that this policy's tokenizer and chat "
            "template do not make from its text; Monte-Carlo continuations must run with the "
            "tokenizer of the policy that wrote the records (give --mc-model that checkpoint; "
            "records rendered with tools in the template or inline observations are not supported)")


def estimate_mc_values(
    trajectories: Sequence[Trajectory], backend: PolicyBackend, renderer: ChatRenderer,
    policy: EnvPolicy | None = None, settings: MCSettings | None = None, *,
    progress: Callable[[int], Any] | None = None, clock: Callable[[], float] = time.monotonic,
) -> MCResult:
    """Estimate every state and turn value (see the module docstring). ``progress(total)``
    returns a bar with ``update(n)`` and ``close()`` (a tqdm)."""
    settings = settings or MCSettings()
    settings.check()
    trajectories = list(trajectories)
    if settings.max_new_tokens is None:
        settings = dataclasses.replace(settings, max_new_tokens=longest_action(trajectories))
    model_context = getattr(backend, "max_context", None)
    if model_context and model_context < settings.max_context_tokens:
        settings = dataclasses.replace(settings, max_context_tokens=int(model_context))
    policy = policy or EnvPolicy()
    return asyncio.run(_estimate(trajectories, backend, renderer, policy, settings,
                                 progress, clock))


async def _estimate(trajs: list[Trajectory], backend: PolicyBackend, renderer: ChatRenderer,
                    policy: EnvPolicy, settings: MCSettings, progress: Any, clock: Any
                    ) -> MCResult:
    start = clock()
    result = MCResult(state_values=[[None] * t.n_turns for t in trajs], turn_values=[])
    runnable = []
    for i, t in enumerate(trajs):
        why = skip_reason(t)
        if why is not None:
            result.skipped.append((t.id, f"{why.field}: {why.recorded}"))
            continue
        policy.check_env_id(t.env_id, f"trajectory {t.id!r}")  # refusals stop the run
        policy.check_kwargs(t.env_kwargs or {}, f"trajectory {t.id!r}")
        runnable.append(i)
    result.states_total = sum(trajs[i].n_turns for i in runnable)
    pools: dict[str, tuple[EnvPool, tuple[str, ...]]] = {}
    bar = progress(result.states_total) if progress else None

    def spent() -> bool:
        budget = settings.budget_s
        result.stopped_early = budget is not None and clock() - start >= budget
        return result.stopped_early

    try:
        for i in runnable:
            if spent():
                break
            traj = trajs[i]
            check_tokens(traj, renderer)
            pool, stops = _pool(pools, traj, policy)
            for turn in range(traj.n_turns):
                if spent():
                    break
                try:
                    returns = await _continue(traj, turn, backend, renderer, pool, stops, settings)
                    result.state_values[i][turn] = sum(returns) / len(returns)
                except _ContinuationFailed as exc:
                    result.failed.append((traj.id, turn, str(exc)))
                result.states_done += 1
                if bar is not None:
                    bar.update(1)
            if result.stopped_early:
                break
    finally:
        if bar is not None:
            bar.close()
        for pool, _ in pools.values():
            pool.close()
    result.turn_values = [turn_values(v, t.rewards) for v, t in zip(result.state_values, trajs)]
    result.seconds = clock() - start
    return result


class _ContinuationFailed(Exception):
    """A continuation of one state ended in an error (its record's ``error``)."""


def _pool(pools: dict, traj: Trajectory, policy: EnvPolicy) -> tuple[EnvPool, tuple[str, ...]]:
    """The environments of ``traj``'s (env_id, env_kwargs), built through ``policy``, and their
    stop strings (one pool per distinct configuration: building one can open an index)."""
    key = json.dumps([traj.env_id, traj.env_kwargs], sort_keys=True, default=str)
    if key not in pools:
        env_id, kwargs = traj.env_id, dict(traj.env_kwargs or {})
        pool = EnvPool(lambda: policy.make_env(env_id, kwargs))
        probe = pool.acquire()
        pool.release(probe)
        pools[key] = (pool, tuple(probe.unwrapped.stop_strings))
    return pools[key]


async def _continue(traj: Trajectory, turn: int, backend: PolicyBackend, renderer: ChatRenderer,
                    pool: EnvPool, stops: tuple[str, ...], settings: MCSettings) -> list[float]:
    """The returns (rewards from ``turn`` on) of ``settings.k`` continuations from ``s_turn``."""
    # lockstep rounds: the K continuations share backend calls in a fixed composition, so
    # their floats (and tokens) are the same in every run
    batcher = GenerationBatcher(backend, max_batch=settings.k, mode="rounds")
    task = Task.from_dict(traj.task)
    base = RolloutConfig(group_size=1, max_context_tokens=settings.max_context_tokens,
                         sampling=SamplingParams(max_new_tokens=settings.max_new_tokens,
                                                 temperature=settings.temperature, stop=stops))

    async def one(k: int) -> Trajectory:
        seed = stream_seed(settings.seed, "mc", traj.id, turn, k)
        config = dataclasses.replace(
            base, sampling=dataclasses.replace(base.sampling, seed=seed))
        env = pool.acquire()
        try:
            return await rollout_one(
                env, task, seed=traj.seed, group=traj.group, traj_id=f"{traj.id}/mc{turn}.{k}",
                batcher=batcher, renderer=renderer, config=config, env_id=traj.env_id,
                env_kwargs=traj.env_kwargs, sample_key=(k,), prefix=traj, prefix_turns=turn)
        finally:
            pool.release(env)
            batcher.leave((k,))

    for k in range(settings.k):
        batcher.join((k,))
    continuations = await asyncio.gather(*(one(k) for k in range(settings.k)))
    for c in continuations:
        if c.error is not None:
            raise _ContinuationFailed(c.error)
    return [float(sum(c.rewards[turn:])) for c in continuations]


def longest_action(trajectories: Iterable[Trajectory]) -> int:
    """The most tokens any recorded action has (a lower bound of the budget it was sampled
    with; exactly that budget when an action was cut at it)."""
    return max((len(a) for t in trajectories for a in t.action_ids), default=1)
