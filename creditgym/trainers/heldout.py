"""The held-out tasks: which they are, for an environment without a test split, and evaluating
the policy on them (:func:`evaluate`).

``heldout_ids(task_ids, fraction)`` picks ``round(fraction * n)`` task ids (at least one, and at
least one left to train on) by the SHA-256 of each id: deterministic, independent of the task
order, the seed and the machine, and stable when tasks are added (a task's fate depends on its
own id and its rank among the others). The trainer never trains on, demonstrates or fits a
tokenizer to those tasks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from creditgym.agents.backend import SamplingParams
from creditgym.agents.rollout import RolloutConfig, rollout
from creditgym.errors import ConfigError
from creditgym.evaluate import summarize
from creditgym.files import atomic_writer
from creditgym.replay import run_metadata
from creditgym.replay.io import RUN_SCHEMA, encode_line, meta_path, write_json_atomic
from creditgym.trainers import parallel
from creditgym.trainers.run_files import brief


def heldout_ids(task_ids: Sequence[str], fraction: float, *, where: str = "env") -> set[str]:
    """The held-out subset of ``task_ids`` (see the module docstring)."""
    ids = list(dict.fromkeys(task_ids))
    if len(ids) != len(task_ids):
        raise ConfigError(f"{where}: task ids repeat, so no held-out split by id is possible; "
                          "give every task a unique id, or name a held-out environment with "
                          "eval.env_kwargs")
    if len(ids) < 2:
        raise ConfigError(f"{where}: {len(ids)} task(s); holding some out for evaluation needs at "
                          "least 2 (or name a held-out environment with eval.env_kwargs)")
    k = min(max(round(fraction * len(ids)), 1), len(ids) - 1)
    ranked = sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    return set(ranked[:k])


def evaluate(trainer: Any, name: str, updates: int) -> dict[str, float]:
    """Roll out ``trainer``'s held-out tasks (a :class:`creditgym.trainers.loop.Trainer`) with
    its current rollout policy; rank 0 writes ``eval-NAME.jsonl`` whole, its records marked with
    ``updates`` (the policy updates taken before it), and returns the summary (``{}`` on the
    other ranks)."""
    ev = trainer.cfg.eval
    config = RolloutConfig(group_size=1, max_context_tokens=trainer.cfg.rl.max_context_tokens,
                           system_prompt=trainer.cfg.system_prompt,
                           batching=trainer.cfg.rollout.batching,
                           sampling=SamplingParams(max_new_tokens=trainer.cfg.rl.max_new_tokens,
                                                   temperature=ev.temperature,
                                                   stop=trainer.stop, seed=trainer.cfg.seed))
    tasks = trainer.test_tasks[: ev.episodes]
    mine = parallel.share(len(tasks))  # every task on one process or split over ranks
    trajs = rollout(trainer.test_env, [tasks[i] for i in mine], trainer.backend, trainer.renderer,
                    config, seed=trainer.cfg.seed, env_id=trainer.cfg.env.id,
                    env_kwargs=trainer.test_kwargs, task_keys=mine)
    gathered = parallel.gather_trajectories(trajs, [t.id for t in tasks])
    if gathered is None:
        return {}  # not rank 0: it writes and summarises
    trajs = gathered[0]
    for t in trajs:
        t.iteration = updates
    path = trainer.run_dir / f"eval-{name}.jsonl"
    with atomic_writer(path, "wb") as f:  # readers never see half an evaluation
        f.writelines(encode_line(t) for t in trajs)
    write_json_atomic(meta_path(path), {"schema": RUN_SCHEMA, "run": run_metadata(phase=name),
                                        "resumed": []})
    summary = summarize(trajs, trainer.env_class.aggregate_metrics)
    trainer.evals[name] = summary
    trainer.log(f"eval {name}: {brief(summary)}")
    return summary
