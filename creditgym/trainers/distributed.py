"""Data parallelism on torch.distributed and FSDP2: process group, sharding, collectives, split.

Contract:

* Ranks are started by ``torchrun`` / ``torch.distributed.run`` (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`init_distributed` joins the group
  (NCCL when CUDA is available, gloo otherwise); without those variables the process is a
  world of one and nothing is initialised, so every helper here is then the identity.
* Collectives carry a timeout: a rank that died leaves the others with an error after
  ``timeout_s`` seconds, not a hang.
* :func:`shard_model` applies FSDP2 (``fully_shard``) to each decoder layer, then to the root.
  Gradients are **summed** over ranks, not averaged: every trainer loss divides by *global*
  token / sequence counts (:func:`all_reduce_sum` of the local counts), so the summed gradient
  is the single-process gradient of the union of the ranks' trajectories.
* Work is split by whole trajectory groups (:func:`split_groups`), so group statistics (every
  credit estimator's baselines) stay local to one rank.
* Every rank must run the same number of forward/backward passes, because each FSDP forward
  all-gathers parameters: :func:`even_micro_batches` pads a rank's micro-batch list with
  zero-weight passes up to the longest list of any rank.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from creditgym.errors import CreditGymError
from creditgym.trainers.logprobs import Batch

G = TypeVar("G")

DEFAULT_TIMEOUT_S = 600.0
"""Collective timeout when neither the argument nor ``CREDITGYM_DIST_TIMEOUT_S`` sets one."""


class DistributedError(CreditGymError, RuntimeError):
    """A collective failed or timed out, or the ranks disagree about the work to do."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    """Global rank (0 is the main rank)."""
    world: int
    """Number of ranks."""
    local_rank: int
    """Rank within this node (picks the GPU)."""
    device: torch.device
    """Device this rank computes on."""
    backend: str | None
    """``nccl``, ``gloo``, or None for a world of one without a process group."""


def init_distributed(timeout_s: float | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment (idempotent).

    ``timeout_s`` bounds every collective (default ``CREDITGYM_DIST_TIMEOUT_S`` or 600 s).
    """
    if dist.is_available() and dist.is_initialized():
        return _info()
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return _info()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if timeout_s is None:
        timeout_s = float(os.environ.get("CREDITGYM_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    timeout = timedelta(seconds=timeout_s)
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are "
                f"visible; start at most that many processes per node")
        torch.cuda.set_device(local_rank)
        # NCCL's watchdog turns a stuck collective into an error instead of a hang
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        dist.init_process_group("nccl", timeout=timeout,
                                device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return _info()


def _info() -> DistInfo:
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not (dist.is_available() and dist.is_initialized()):
        device = torch.device("cuda", torch.cuda.current_device()) \
            if torch.cuda.is_available() else torch.device("cpu")
        return DistInfo(0, 1, 0, device, None)
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" \
        else torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world() -> int:
    """Number of ranks (1 without a process group)."""
    return _world()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return _rank()


def is_main() -> bool:
    """True on rank 0, the rank that writes files and logs."""
    return rank() == 0


def _collective_device() -> torch.device:
    # NCCL only reduces CUDA tensors; gloo only CPU ones
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(x, op: dist.ReduceOp):
    if world() == 1:
        return x  # the single-process path stays bit-identical: no copy, no cast
    if isinstance(x, torch.Tensor):
        t = x.detach().to(_collective_device(), copy=True)
    else:
        t = torch.as_tensor(x, dtype=torch.float64, device=_collective_device())
    try:
        dist.all_reduce(t, op=op)
    except RuntimeError as e:  # gloo/NCCL timeouts and closed connections surface here
        raise DistributedError(
            f"rank {rank()}/{world()}: all-reduce failed ({e}); another rank has probably died "
            f"or stalled; see its log") from e
    if isinstance(x, torch.Tensor):
        return t.to(x.device)
    if isinstance(x, (int, float)):
        return type(x)(t.item())
    return type(x)(v.item() for v in t)


def all_reduce_sum(x):
    """Sum over ranks of a tensor, a number, or a list/tuple of numbers (same type back).

    Numbers travel as float64; counts below 2**53 come back exact. A world of one returns ``x``.
    """
    return _all_reduce(x, dist.ReduceOp.SUM)


def all_reduce_max(x):
    """Maximum over ranks (same argument types as :func:`all_reduce_sum`)."""
    return _all_reduce(x, dist.ReduceOp.MAX)


def split_groups(groups: Sequence[G], *, rank: int | None = None, world: int | None = None,
                 weight: Callable[[G], float] = len) -> list[G]:
    """This rank's share of ``groups``, whole groups only, in their original order.

    Greedy balance: groups are taken heaviest first (ties by position) and each goes to the
    lightest rank so far (ties: lowest rank). The result depends only on the groups' weights
    and order, so every rank computes the same partition without communicating. A rank may get
    no group when there are fewer groups than ranks.
    """
    r = _rank() if rank is None else rank
    w = _world() if world is None else world
    if not 0 <= r < w:
        raise DistributedError(f"rank {r} is outside a world of {w}")
    load = [0.0] * w
    owner = [0] * len(groups)
    for i in sorted(range(len(groups)), key=lambda i: (-float(weight(groups[i])), i)):
        k = min(range(w), key=lambda j: (load[j], j))
        owner[i] = k
        load[k] += float(weight(groups[i]))
    return [g for g, k in zip(groups, owner) if k == r]


def even_micro_batches(micros: list[Batch]) -> list[Batch]:
    """``micros`` padded with zero-weight passes to the longest micro-batch list of any rank.

    A padding pass is the first row of ``micros[0]`` with an all-zero loss mask: its loss and
    gradient are exactly 0, but its forward/backward joins FSDP's all-gathers and
    reduce-scatters. A world of one returns ``micros`` unchanged.
    """
    if world() == 1:
        return micros
    n = int(all_reduce_max(len(micros)))
    if len(micros) == n:
        return micros
    first = micros[0].select([0])
    pad = dataclasses.replace(first, loss_mask=torch.zeros_like(first.loss_mask))
    return micros + [pad] * (n - len(micros))


def shard_model(model: torch.nn.Module, *, mixed_precision: bool,
                cpu_offload: bool = False) -> torch.nn.Module:
    """FSDP2 on ``model`` in place (each decoder layer, then the root); returns it.

    Decoder layers are the modules whose class is named in ``model._no_split_modules`` (every
    transformers causal LM declares it). On CUDA with ``mixed_precision``, parameters are
    all-gathered and computed in bf16 while gradients are reduced in fp32 into fp32 sharded
    master weights; on CPU everything stays fp32. ``cpu_offload``: sharded parameters,
    gradients and optimiser state live in CPU memory and are copied to the device per use
    (``CPUOffloadPolicy``). Gradients are summed over ranks (module docstring). Needs
    :func:`init_distributed` first.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy
    from torch.distributed.fsdp import fully_shard

    if not dist.is_initialized():
        raise DistributedError("shard_model needs a process group; call init_distributed() "
                               "under torchrun first")
    info = _info()
    mesh = init_device_mesh(info.device.type, (info.world,))
    if mixed_precision and info.device.type == "cuda":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        mp = MixedPrecisionPolicy()
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names and m is not model]
    # pinned host memory speeds the copies to a GPU; a CPU-only machine has none to pin
    offload = (CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if cpu_offload
               else OffloadPolicy())
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp, offload_policy=offload)
    fully_shard(model, mesh=mesh, mp_policy=mp, offload_policy=offload)
    for m in [*layers, model]:
        # sum, never average: losses are already divided by global counts (module docstring)
        m.set_gradient_divide_factor(1.0)
        m.set_force_sum_reduction_for_comms(True)
    return model


def raise_together(error: BaseException | None) -> None:
    """Every rank raises when any rank has ``error``; call it on every rank, error or not.

    The failing rank raises its own error, the others a :class:`DistributedError` naming it, so
    a bad input on one rank ends the job at once instead of at the collective timeout.
    """
    if _world() == 1:
        if error is not None:
            raise error
        return
    flags = [0.0] * _world()
    flags[_rank()] = 1.0 if error is not None else 0.0
    failed = [r for r, f in enumerate(all_reduce_sum(flags)) if f]
    if error is not None:
        raise error
    if failed:
        raise DistributedError(f"rank(s) {failed} failed on their share of the batch; see "
                               f"their error (this is rank {_rank()})")


def _collective(what: str, fn: Callable[[], G]) -> G:
    try:
        return fn()
    except RuntimeError as e:  # gloo/NCCL timeouts and closed connections surface here
        raise DistributedError(
            f"rank {rank()}/{world()}: {what} failed ({e}); another rank has probably died "
            f"or stalled; see its log") from e


def barrier() -> None:
    """Wait for every rank (with the collective timeout); nothing in a world of one."""
    if world() > 1:
        _collective("barrier", dist.barrier)


def gather_objects(obj: G) -> list[G] | None:
    """Every rank's ``obj`` (picklable) in rank order on rank 0, None on the others."""
    if world() == 1:
        return [obj]
    out: list | None = [None] * world() if is_main() else None
    _collective("gather", lambda: dist.gather_object(obj, out, dst=0))
    return out


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded parameters and buffers of a (possibly FSDP2-sharded) model on every rank
    (``torch.distributed.checkpoint.state_dict.get_model_state_dict``, full_state_dict)."""
    if world() == 1:
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return _collective("state-dict gather", lambda: get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True)))
