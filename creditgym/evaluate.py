"""``creditgym eval``: roll out a policy on an environment, write trajectories and a summary.

Trajectories go to a JSONL file as they finish (``replay verify`` re-steps them), the run's
metadata to ``FILE.meta.json`` and the summary (the environment's ``aggregate_metrics`` over the
episodes: success, reward, turns and its own metrics, plus tokens) to ``FILE.summary.json`` and
the terminal.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from creditgym.config import to_plain
from creditgym.trajectory import Trajectory


def episode_metrics(traj: Trajectory) -> dict[str, float]:
    """One finished episode's numbers: its outcome ``metrics`` (the numeric ones) plus
    ``success``, ``reward`` (the return), ``turns`` and ``invalid_actions``."""
    out = {k: float(v) for k, v in traj.metrics.items() if isinstance(v, (int, float))}
    out.update(success=float(traj.success or 0.0), reward=traj.episode_return,
               turns=float(traj.n_turns),
               invalid_actions=float(traj.metrics.get("invalid_actions", 0.0)))
    return out


def summarize(trajs: Sequence[Trajectory],
              aggregate: Callable[[list[dict[str, float]]], dict[str, float]] | None = None,
              ) -> dict[str, float]:
    """One row for ``trajs``: the environment's ``aggregate_metrics`` over the finished episodes
    (``episode_metrics``; errored ones are counted, not averaged; default: ``ToolEnv``'s, the
    mean of every numeric key), plus ``trajectories``, ``errored``, ``generated_tokens`` and
    ``truncated``."""
    ok = [t for t in trajs if t.error is None]
    if aggregate is None:
        from creditgym.envs.tool_env import ToolEnv

        aggregate = ToolEnv.aggregate_metrics
    row = {"success": 0.0, "reward": 0.0, "turns": 0.0}  # present even when nothing finished
    row.update(aggregate([episode_metrics(t) for t in ok]) if ok else {})
    n = max(len(ok), 1)
    return {"trajectories": float(len(trajs)), "errored": float(len(trajs) - len(ok)), **row,
            "generated_tokens": sum(sum(map(len, t.action_ids)) for t in ok) / n,
            "truncated": sum(float(t.truncated) for t in ok) / n}


def open_backend(model: str | None, url: str | None, *, seed: int | None = None):
    """A transformers backend for a local model folder, or an HTTP one for a server URL (both
    opened through the backend registry, ``creditgym.agents.backends``)."""
    from creditgym.agents.backends import make_backend

    if url:
        return make_backend("http", url=url, model=model, on_error="completion")
    return make_backend("transformers", model=model, seed=seed)


def run_eval(
    *, env_id: str, env_kwargs: dict[str, Any], model: str | None, url: str | None = None,
    episodes: int = 32, group: int = 1, out: str | Path, rollout_config=None, seed: int = 0,
    progress: bool = True, tokenizer_path: str | None = None,
) -> dict[str, float]:
    from creditgym.agents.chat import ChatRenderer
    from creditgym.agents.rollout import RolloutConfig, rollout
    from creditgym.envs.factory import env_factory
    from creditgym.replay import TrajectoryWriter, run_metadata

    import dataclasses

    config = dataclasses.replace(rollout_config or RolloutConfig(), group_size=group)
    make_env = env_factory(env_id, env_kwargs)
    probe = make_env()
    tasks = list(probe.unwrapped.tasks)[:episodes]
    if not config.sampling.stop:  # generation of one action stops where the environment says
        config = dataclasses.replace(config, sampling=dataclasses.replace(
            config.sampling, stop=tuple(probe.unwrapped.stop_strings)))
    backend = open_backend(model, url, seed=seed)
    model_context = getattr(backend, "max_context", None)  # in-process backends know theirs
    if model_context and model_context < config.max_context_tokens:
        # Past the model's own context a backend answers empty or refuses; end episodes first.
        config = dataclasses.replace(config, max_context_tokens=int(model_context))
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:  # an HTTP backend: the prompts are ours to render, with the model's tokenizer
        from transformers import AutoTokenizer

        if not (tokenizer_path or model):
            from creditgym.errors import ConfigError

            raise ConfigError("an HTTP policy needs --tokenizer PATH (a local copy of its tokenizer)")
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path or model))
    renderer = ChatRenderer(tokenizer, observation_mode=config.observation_mode,
                            observation_role=config.observation_role)
    first = [probe]

    def reuse_then_make():
        return first.pop() if first else make_env()

    meta = run_metadata(model=model, url=url, env_id=env_id, env_kwargs=env_kwargs, seed=seed,
                        episodes=len(tasks), group=group, rollout=to_plain(config))
    start = time.perf_counter()
    try:
        with TrajectoryWriter(out, meta) as writer:
            trajs = rollout(reuse_then_make, tasks, backend, renderer, config, seed=seed,
                            env_id=env_id, env_kwargs=env_kwargs, on_trajectory=writer.write,
                            progress=progress)
    finally:
        backend.close()
    summary = summarize(trajs, getattr(type(probe.unwrapped), "aggregate_metrics", None))
    summary["seconds"] = time.perf_counter() - start
    Path(f"{out}.summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

