"""How ``creditgym train`` runs on several ranks (``--nproc N`` or torchrun); a world of one is
the single-process trainer unchanged.

* **Policy**: trained as an FSDP2-sharded module (:func:`~creditgym.trainers.distributed.shard_model`;
  the KL reference and the implicit PRM too). An FSDP2 module cannot generate on ranks
  independently (every forward is a collective, and ranks generate different numbers of
  tokens), so each rank also keeps an **unsharded rollout copy** of the policy, which the
  rollout backend generates with; after every update (and after the SFT warm start) the copy
  is refreshed from the sharded model with ``get_model_state_dict(full_state_dict=True)``.
* **Work split**: each iteration's tasks are split over ranks by whole groups (one task = one
  group of ``rl.group_size``; ``split_groups``), so every estimator's group statistics and
  model-derived inputs stay local; the update normalises by global counts. Rollout seeds derive
  from a task's position in the whole batch (``rollout(task_keys=...)``), so the trajectories
  do not depend on the number of ranks beyond generation-batch composition. SFT: each rank
  takes every ``world``-th demonstration of the sampled batch. Evaluation: test tasks split
  the same way.
* **Files**: trajectories are gathered to rank 0 (``gather_object``), which alone writes
  ``rollouts.jsonl``, ``eval-*.jsonl``, ``metrics.jsonl``, ``evals.json``, the config and the
  plot: one run folder that ``replay`` reads as is, with records in single-process order.
  Gathering costs one pickle of the iteration's trajectories, small next to generation.
* **Checkpoints**: :mod:`creditgym.trainers.dist_checkpoint` (DCP), at any world size.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from creditgym.trainers.distributed import (
    gather_objects,
    is_main,
    raise_together,
    shard_model,
    split_groups,
    world,
)
from creditgym.trajectory import Trajectory

R = TypeVar("R")


def prepare_policy(model: torch.nn.Module, *, bf16: bool, cpu_offload: bool = False,
                   separate_rollout_copy: bool = False) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(trained model, rollout model): the same module in a world of one (unless
    ``separate_rollout_copy``: off-policy rollouts sample while the update runs); else the
    model sharded in place and an unsharded copy taken before sharding."""
    if world() == 1:
        if separate_rollout_copy:
            return model, copy.deepcopy(model).requires_grad_(False)
        return model, model
    rollout_model = copy.deepcopy(model).requires_grad_(False)
    return shard_model(model, mixed_precision=bf16, cpu_offload=cpu_offload), rollout_model


def frozen_copy(model: torch.nn.Module, *, bf16: bool, cpu_offload: bool = False
                ) -> torch.nn.Module:
    """A module for a trainer-side forward only (the KL reference): sharded with several ranks
    (its forwards then join the policy's micro-batch passes)."""
    model.requires_grad_(False)
    if world() == 1:
        return model
    return shard_model(model, mixed_precision=bf16, cpu_offload=cpu_offload)


def trainable_copy(unsharded: torch.nn.Module, trainable: set[str], *, bf16: bool,
                   cpu_offload: bool = False) -> torch.nn.Module:
    """A separately trained copy of the policy (the implicit PRM) in which the parameters named
    in ``trainable`` train (the policy's: LoRA adapters stay adapters), sharded with several
    ranks."""
    model = copy.deepcopy(unsharded)
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    if world() == 1:
        return model
    return shard_model(model, mixed_precision=bf16, cpu_offload=cpu_offload)


def main_first(fn: Callable[[], R]) -> R:
    """``fn()`` on rank 0, then on the others (e.g. rank 0 builds a model folder the others
    load); an error on rank 0 ends every rank at once."""
    if world() == 1:
        return fn()
    if is_main():
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - re-raised by raise_together
            raise_together(e)
        raise_together(None)
        return out
    raise_together(None)
    return fn()


def share(n: int) -> list[int]:
    """This rank's positions among ``n`` tasks (whole groups; every task weighs the same)."""
    return split_groups(list(range(n)), weight=lambda _: 1.0)


def gather_trajectories(trajs: Sequence[Trajectory], keys: Sequence[str], *,
                        extra: Any = None) -> tuple[list[Trajectory], list[Any]] | None:
    """Every rank's trajectories on rank 0, ordered like one process would write them (by the
    position of their group key in ``keys``, members in order), and every rank's ``extra``;
    None on the other ranks."""
    got = gather_objects((list(trajs), extra))
    if got is None:
        return None
    if world() == 1:
        return list(trajs), [extra]
    pos = {k: i for i, k in enumerate(keys)}
    flat = [t for part, _ in got for t in part]
    flat.sort(key=lambda t: pos.get(t.group, len(pos)))  # stable: members keep their order
    return flat, [e for _, e in got]


def merged_inputs(parts: Sequence[dict | None]) -> dict | None:
    """The ranks' model-derived credit inputs (name -> trajectory id -> values) as one."""
    if all(p is None for p in parts):
        return None
    out: dict[str, dict] = {}
    for p in parts:
        for name, values in (p or {}).items():
            out.setdefault(name, {}).update(values)
    return out

