"""Multi-turn token-in/token-out rollouts: environments + a policy backend -> Trajectory records.

For each task, ``group_size`` environments are reset with the same seed and the task pinned.
Every trajectory is a coroutine: render the prompt once, then alternately generate (through a
``GenerationBatcher``, so concurrent trajectories share backend calls) and step the environment
through its wrappers (``creditgym.envs.astep``: the outermost object's ``astep`` when it has
one, else ``step`` in a thread; never ``env.unwrapped``), appending generated ids as generated and
each observation as its chat-template delta ids. Loss mask: 1 on generated ids only.

An episode ends when the environment terminates or truncates, or when the next turn would not fit
``max_context_tokens`` (recorded as ``truncated``, never a crash). An environment that raises or a
backend error marks that trajectory ``error`` (with the turns so far) and the batch continues.

Reproducible sampling: when ``config.sampling.seed`` is set, every generation call carries its
own seed ``stream_seed(sampling.seed, task index, member, turn)`` (a stable hash, never Python's
``hash()``), so a trajectory's random stream depends only on those keys, not on how requests were
batched or how fast environments answered. Callers fold further keys (a training iteration) into
``sampling.seed``. That fixes the tokens; bit-identical log-probs also need a deterministic
batch composition, ``config.batching`` (see ``creditgym.agents.generation_batcher``): ``rounds``
(lockstep, batched) or ``alone`` (one prompt per call), not ``free``.

Continuations: ``rollout_one(..., prefix=record, prefix_turns=t)`` starts from the state before
turn ``t`` of a recorded episode (its recorded actions re-stepped, its recorded ids kept) and
samples from there: what Monte-Carlo turn values (``creditgym.bench.mc_values``) are made of.

Admission: at most ``max_concurrency`` trajectories are in flight; they are admitted in
task-then-member order, the next one at the moment (same event-loop step) one ends, so under
``rounds`` which round a trajectory starts in does not depend on timing either.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import gymnasium

from creditgym.agents.backend import PolicyBackend, SamplingParams
from creditgym.agents.chat import ChatRenderer
from creditgym.agents.generation_batcher import BatchingMode, GenerationBatcher
from creditgym.envs.async_step import astep
from creditgym.envs.task import Task
from creditgym.errors import ConfigError
from creditgym.trajectory import Trajectory

SEARCH_R1_STOPS = ("</search>", "</answer>")
"""Stop strings of Search-R1-style actions: generation ends at the first closing call tag."""


@dataclass
class RolloutConfig:
    """How trajectories are generated."""

    group_size: int = 8
    """Trajectories per task, all reset with the same seed (a credit-assignment group)."""
    sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(max_new_tokens=128, stop=SEARCH_R1_STOPS)
    )
    """Sampling settings of every generation call (stop strings, temperature, ...)."""
    max_context_tokens: int = 4096
    """Prompt + all turns may not exceed this; the episode is truncated when the next turn would."""
    observation_mode: Literal["message", "inline"] = "message"
    """``message``: each observation is a chat message (its template delta); ``inline``: the
    observation text is appended to the assistant turn, as Search-R1 does."""
    observation_role: str = "user"
    """Chat role of observation messages (``tool`` for templates with a tool role)."""
    system_prompt: bool = True
    """Send the environment's ``info["system_prompt"]`` as a system message."""
    tools_in_template: bool = False
    """Pass the environment's tool schemas to the chat template (``tools=``)."""
    max_concurrency: int = 256
    """Trajectories in flight at once (and environments kept open)."""
    max_generation_batch: int = 64
    """Most prompts per backend call."""
    batching: BatchingMode = "free"
    """How concurrent trajectories' requests form backend calls: ``free`` (each call takes
    whatever is queued: a slow tool holds back only its own trajectory), ``rounds`` (lockstep:
    a call waits until every live trajectory has a request, sorted by (task, member): the same
    config gives the same batches, so bit-identical log-probs at batched speed; a round waits
    for the slowest environment step) or ``alone`` (one prompt per call: bit-identical, slow).
    See ``creditgym.agents.generation_batcher``."""
    check_prefix: bool = False
    """Debug: after each turn compare the running ids with a fresh render; record mismatches."""


def stream_seed(*keys: int | str) -> int:
    """A 63-bit seed that depends only on ``keys``: the same in every process and Python version
    (blake2b of their text; ``hash()`` is salted per process), distinct for distinct keys."""
    text = "\x1f".join(f"{type(k).__name__}:{k}" for k in keys)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


async def replay_prefix(
    env: gymnasium.Env, prefix: Trajectory, turns: int, traj: Trajectory, messages: list[dict],
    anchor: Any, observation_role: str = "user",
) -> tuple[list[int], Any]:
    """Re-step ``prefix``'s first ``turns`` recorded actions through ``env`` (just reset as
    ``prefix`` was) and copy those turns into ``traj`` as recorded: prompt ids, action ids and
    log-probs, observation ids (token-in/token-out: the running ids are the record's, never a
    re-render). ``messages`` grows as the rollout's would. Returns the running ids and the
    anchor before turn ``turns``. An environment that answers otherwise than the record says
    (observation, reward, or an early end) is not deterministic: ``RuntimeError``."""
    if not 0 <= turns < prefix.n_turns or len(prefix.actions) != prefix.n_turns:
        raise ValueError(f"prefix {prefix.id!r}: cannot start before turn {turns} (it has "
                         f"{prefix.n_turns} turns, action texts recorded: {bool(prefix.actions)})")
    traj.prompt_ids = list(prefix.prompt_ids)
    running = list(prefix.prompt_ids)
    for turn in range(turns):
        action = prefix.actions[turn]
        obs, reward, terminated, truncated, info = await astep(env, action)
        recorded_obs = prefix.observations[turn] if prefix.observations else obs
        if (obs != recorded_obs or abs(reward - prefix.rewards[turn]) > 1e-9
                or terminated or truncated):
            raise RuntimeError(
                f"replaying {prefix.id!r}: turn {turn} differs from the record (observation, "
                f"reward {reward} vs {prefix.rewards[turn]}, or an early end); the environment "
                "is not deterministic for this seed and task (`creditgym replay verify` shows "
                "where)")
        traj.add_turn(action=action, action_ids=prefix.action_ids[turn], observation=obs,
                      observation_ids=prefix.observation_ids[turn], reward=reward, anchor=anchor,
                      info=info, action_logprobs=prefix.action_logprobs[turn],
                      finish_reason=(prefix.finish_reasons or ["stop"] * turns)[turn])
        running += prefix.action_ids[turn] + prefix.observation_ids[turn]
        messages += [{"role": "assistant", "content": action},
                     {"role": observation_role, "content": obs}]
        anchor = info.get("anchor", obs)
    return running, anchor


class EnvPool:
    """Environments built on demand and reused across episodes (building one can be costly)."""

    def __init__(self, make_env: Callable[[], gymnasium.Env]) -> None:
        self.make_env = make_env
        self._idle: list[gymnasium.Env] = []
        self.envs: list[gymnasium.Env] = []

    def acquire(self) -> gymnasium.Env:
        if self._idle:
            return self._idle.pop()
        env = self.make_env()
        self.envs.append(env)
        return env

    def release(self, env: gymnasium.Env) -> None:
        self._idle.append(env)

    def close(self) -> None:
        for env in self.envs:
            env.close()


async def rollout_one(
    env: gymnasium.Env, task: Task, *, seed: int | None, group: str, traj_id: str,
    batcher: GenerationBatcher, renderer: ChatRenderer, config: RolloutConfig,
    env_id: str = "", env_kwargs: dict | None = None, sample_key: tuple[int, ...] = (),
    prefix: Trajectory | None = None, prefix_turns: int = 0,
) -> Trajectory:
    """Roll out one episode of ``task`` (see the module docstring). With a seeded
    ``config.sampling``, turn ``t`` samples with ``stream_seed(seed, *sample_key, t)``;
    ``sample_key`` is also the trajectory's key with ``batcher`` (a ``rounds`` batcher needs
    ``batcher.join(sample_key)`` before and ``leave`` after).

    ``prefix``: a record of this environment, task and ``seed`` whose first ``prefix_turns``
    turns open the episode (``replay_prefix``); sampling starts at turn ``prefix_turns``."""
    traj = Trajectory(id=traj_id, group=group, task=task.to_dict(), prompt_ids=[], env_id=env_id,
                      env_kwargs=dict(env_kwargs or {}), seed=seed, created=time.time())
    try:
        obs, info = await asyncio.to_thread(env.reset, seed=seed, options={"task": task})
        messages: list[dict] = []
        if config.system_prompt and info.get("system_prompt"):
            messages.append({"role": "system", "content": info["system_prompt"]})
        messages.append({"role": "user", "content": obs})
        tools = info.get("tools") if config.tools_in_template else None
        traj.prompt_messages = [dict(m) for m in messages]
        traj.prompt_ids = renderer.prompt_ids(messages, tools=tools)
        running, anchor = list(traj.prompt_ids), info.get("anchor", obs)
        if prefix is not None:
            running, anchor = await replay_prefix(env, prefix, prefix_turns, traj, messages,
                                                  anchor, config.observation_role)
        mismatches: list[int] = []
        while True:
            budget = config.max_context_tokens - len(running)
            if budget <= 0:
                traj.finish(terminated=False, truncated=True)
                break
            sampling = dataclasses.replace(
                config.sampling, max_new_tokens=min(config.sampling.max_new_tokens, budget)
            )
            if sampling.seed is not None:
                turn_seed = stream_seed(sampling.seed, *sample_key, len(traj.action_ids))
                sampling = dataclasses.replace(sampling, seed=turn_seed)
            completion = await batcher.generate(running, sampling, key=sample_key)
            if completion.finish_reason == "error":
                raise RuntimeError(f"backend error: {completion.error}")
            action = renderer.assistant_text(completion.token_ids)
            obs, reward, terminated, truncated, info = await astep(env, action)
            running += completion.token_ids
            ended = terminated or truncated
            obs_ids = [] if ended else renderer.observation_ids(obs, completion.token_ids)
            if not ended and len(running) + len(obs_ids) >= config.max_context_tokens:
                obs_ids, truncated, ended = [], True, True  # no room for the observation
            running += obs_ids
            traj.add_turn(action=action, action_ids=completion.token_ids, observation=obs,
                          observation_ids=obs_ids, reward=reward, anchor=anchor, info=info,
                          action_logprobs=completion.logprobs,
                          finish_reason=completion.finish_reason)
            anchor = info.get("anchor", obs)
            if ended:
                traj.finish(terminated=terminated, truncated=truncated)
                break
            messages += [{"role": "assistant", "content": action},
                         {"role": config.observation_role, "content": obs}]
            if config.check_prefix:
                mismatch = renderer.first_mismatch(running, messages, tools=tools)
                if mismatch is not None:
                    mismatches.append(mismatch.position)
        if mismatches:
            traj.metrics["rollout/prefix_mismatch_at"] = mismatches
    except Exception as exc:  # contained: this trajectory is errored, the batch goes on
        traj.error = f"{type(exc).__name__}: {exc}"
    return traj


async def arollout(
    make_env: Callable[[], gymnasium.Env], tasks: Sequence[Task], backend: PolicyBackend,
    renderer: ChatRenderer, config: RolloutConfig, *, seed: int = 0, group_prefix: str = "",
    env_id: str = "", env_kwargs: dict | None = None,
    on_trajectory: Callable[[Trajectory], None] | None = None, progress: bool = False,
    task_keys: Sequence[int] | None = None,
) -> list[Trajectory]:
    """Roll out ``group_size`` trajectories of every task; results in task-then-member order.

    ``task_keys`` are the tasks' positions in a larger batch (default ``0..len(tasks)-1``); the
    environment and sampling seeds derive from them, so a rank rolling out its share of the
    batch draws what one process rolling out the whole batch would for the same tasks."""
    index = list(range(len(tasks))) if task_keys is None else [int(k) for k in task_keys]
    if len(index) != len(tasks) or len(set(index)) != len(index):
        raise ConfigError(f"task_keys: need {len(tasks)} distinct keys, got {task_keys!r}")
    batcher = GenerationBatcher(backend, max_batch=config.max_generation_batch,
                                mode=config.batching)
    pool = EnvPool(make_env)
    keys = [(i, m) for i in index for m in range(config.group_size)]
    position = {k: p for p, k in enumerate(index)}
    admission = _Admission(keys, config.max_concurrency, batcher)
    bar = _progress(len(keys), progress)

    async def one(task_index: int, member: int) -> Trajectory:
        task = tasks[position[task_index]]
        group = f"{group_prefix}{task.id}"
        key = (task_index, member)
        try:
            await admission.enter(key)
            env = pool.acquire()
            try:
                traj = await rollout_one(
                    env, task, seed=seed + task_index, group=group, traj_id=f"{group}/{member}",
                    batcher=batcher, renderer=renderer, config=config, env_id=env_id,
                    env_kwargs=env_kwargs, sample_key=key,
                )
            finally:
                pool.release(env)
        finally:
            admission.exit(key)
        if on_trajectory is not None:
            on_trajectory(traj)
        if bar is not None:
            bar.update(1)
        return traj

    try:
        return list(await asyncio.gather(*(one(i, m) for i, m in keys)))
    finally:
        if bar is not None:
            bar.close()
        pool.close()


class _Admission:
    """At most ``limit`` trajectories in flight, admitted in ``keys`` order: the first ``limit``
    at once, then one each time one exits. Admitting joins the batcher and happens before the
    exiting one leaves it, in the same event-loop step, so a round never runs without a
    trajectory that is already admitted (a semaphore would wake the next one a step later)."""

    def __init__(self, keys: Sequence[tuple[int, int]], limit: int,
                 batcher: GenerationBatcher) -> None:
        if limit < 1:
            raise ConfigError(f"RolloutConfig.max_concurrency={limit}: must be >= 1")
        self._batcher = batcher
        self._waiting = deque(keys)
        self._admitted = {k: asyncio.Event() for k in keys}
        for _ in range(min(limit, len(keys))):
            self._admit_next()

    def _admit_next(self) -> None:
        key = self._waiting.popleft()
        self._batcher.join(key)
        self._admitted[key].set()

    async def enter(self, key: tuple[int, int]) -> None:
        await self._admitted[key].wait()

    def exit(self, key: tuple[int, int]) -> None:
        if not self._admitted[key].is_set():  # cancelled while waiting: it never ran
            self._waiting.remove(key)
            return
        if self._waiting:
            self._admit_next()
        self._batcher.leave(key)


def rollout(*args: Any, **kwargs: Any) -> list[Trajectory]:
    """Synchronous ``arollout`` (runs its own event loop, in a thread if one is running)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arollout(*args, **kwargs))
    result: list = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(arollout(*args, **kwargs))))
    thread.start()
    thread.join()
    return result[0]


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="traj", desc="rollout")
