"""Training checkpoints with ``torch.distributed.checkpoint`` (DCP), any number of ranks.

Layout (the same ``step-NNNNNN`` / ``latest`` scheme as :mod:`creditgym.trainers.checkpoint`)::

    step-000123/   .metadata  __0_0.distcp ...   model and optimiser, DCP (one file per rank)
                   rng-rank0.pt rng-rank1.pt ...  every rank's Python/numpy/torch RNG states
                   scheduler.pt                   the LR scheduler (the same on every rank)
                   extra.json                     iteration, history...; written last
    latest         names the newest complete step directory

Model and optimiser go through ``get_state_dict`` / ``set_state_dict``
(``torch.distributed.checkpoint.state_dict``), trainable parameters only (a LoRA run checkpoints
its adapters; the frozen base comes from the base model folder): keys are parameter names, tensors are saved as
each rank's shards and DCP reshards on load, so a checkpoint written by 2 ranks resumes on 1 and
the other way round. A rank whose RNG file is missing (resuming on more ranks than saved) takes
rank 0's states, then reseeds torch with a number drawn from them plus its rank (rollout
sampling is seeded per task and iteration, so this only touches unseeded draws).

Atomic: every rank writes into ``.tmp-step-NNNNNN`` (a name all ranks agree on), rank 0 adds
``extra.json``, fsyncs and renames the directory into place, then replaces ``latest``; a crash
leaves the previous checkpoint as ``latest``. The directory must be on a filesystem every rank
sees (one node, or a shared filesystem across nodes). Checkpoints of the single-file format
(``model.pt``, written before this module) still load in a world of one.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from creditgym.files import atomic_write_text, fsync_dir
from creditgym.json_values import to_plain
from creditgym.trainers.checkpoint import (
    LATEST,
    CheckpointError,
    _resolve,
    _step_dirs,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from creditgym.trainers.distributed import barrier, is_main, rank, world


@contextmanager
def _quiet():
    # DCP warns that it "assumes the intent" of a single process whenever there is no group
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def save_sharded(directory: str | Path, step: int, *, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                 extra: dict[str, Any] | None = None, keep_last: int | None = 3) -> Path:
    """Write ``directory/step-{step:06d}`` on every rank (a collective) and point ``latest`` at
    it; keeps the ``keep_last`` newest step directories. ``extra`` (rank 0's) must be JSON."""
    if keep_last is not None and keep_last < 1:
        raise CheckpointError(f"keep_last must be >= 1 or None, got {keep_last}")
    root = Path(directory)
    name = f"step-{int(step):06d}"
    tmp, final = root / f".tmp-{name}", root / name
    # get_state_dict "initialises" an optimiser without state by a zero-lr step(), which
    # advances Adam's step count and so changes the bias correction of the first real update;
    # a fresh optimiser (the checkpoint before the first update) is saved without its state.
    with_optimizer = bool(optimizer.state)
    try:
        extra_json = json.dumps(to_plain({**(extra or {}), "step": int(step),
                                          "optimizer_state": with_optimizer}, strict=True),
                                indent=1)
    except TypeError as exc:
        raise CheckpointError(f"checkpoint extra is not JSON-serialisable: {exc}") from None
    if is_main():
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):  # left by a crashed save
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()
        tmp.mkdir()
    barrier()
    opts = _options(model)
    if with_optimizer:
        model_sd, optim_sd = get_state_dict(model, optimizer, options=opts)
        state = {"model": model_sd, "optimizer": optim_sd}
    else:
        state = {"model": get_model_state_dict(model, options=opts)}
    with _quiet():
        dcp.save(state, checkpoint_id=str(tmp))
    torch.save(rng_state(), tmp / f"rng-rank{rank()}.pt")
    _fsync_file(tmp / f"rng-rank{rank()}.pt")
    barrier()  # every rank's files are in tmp (dcp.save has written .metadata on rank 0)
    if is_main():
        torch.save(scheduler.state_dict() if scheduler is not None else {}, tmp / "scheduler.pt")
        for f in tmp.iterdir():
            if f.is_file():
                _fsync_file(f)
        (tmp / "extra.json").write_text(extra_json)  # last: marks a complete directory
        _fsync_file(tmp / "extra.json")
        fsync_dir(tmp)
        if final.exists():  # re-saving a step: move the old one aside first
            old = root / f".tmp-old-{name}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(root)
        atomic_write_text(root / LATEST, name + "\n")
        if keep_last is not None:
            for _, path in _step_dirs(root)[:-keep_last]:
                if path != final:
                    shutil.rmtree(path, ignore_errors=True)
    barrier()  # nobody goes on (or reads latest) before the checkpoint is in place
    return final


def _options(model: torch.nn.Module) -> StateDictOptions:
    # Trainable parameters only: frozen ones (LoRA's base weights) come from the base model
    # folder, never change, and would make every checkpoint a full copy of the model.
    frozen = any(not p.requires_grad for p in model.parameters())
    return StateDictOptions(ignore_frozen_params=True, strict=not frozen)


def load_model_weights(path: str | Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load only the model's (trainable) weights of a :func:`save_sharded` checkpoint (``path``:
    a step directory or a folder with ``latest``) into ``model``, at any world size; returns
    the checkpoint's ``extra`` (e.g. for ``creditgym export-model``)."""
    ckpt = _resolve(path)
    if (ckpt / "model.pt").is_file():
        raise CheckpointError(f"{ckpt} is a single-process checkpoint (model.pt), written before "
                              "sharded checkpoints; resume the run once to convert it")
    _load_model(ckpt, model)
    extra = json.loads((ckpt / "extra.json").read_text())
    extra["path"] = str(ckpt)
    return extra


def _load_model(ckpt: Path, model: torch.nn.Module) -> None:
    opts = _options(model)
    state = {"model": get_model_state_dict(model, options=opts)}
    with _quiet():
        dcp.load(state, checkpoint_id=str(ckpt))
    set_model_state_dict(model, state["model"], options=opts)


def load_sharded(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                 restore_rng: bool = True) -> dict[str, Any]:
    """Restore a checkpoint of :func:`save_sharded` (any world size) on every rank; returns its
    ``extra`` with ``step`` and ``path``. A single-file checkpoint loads in a world of one."""
    ckpt = _resolve(path)
    if (ckpt / "model.pt").is_file():
        if world() > 1:
            raise CheckpointError(f"{ckpt} is a single-process checkpoint (model.pt); resume it "
                                  f"with --nproc 1, after which checkpoints load at any size")
        return load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler,
                               restore_rng=restore_rng)
    extra = json.loads((ckpt / "extra.json").read_text())
    opts = _options(model)
    if extra.get("optimizer_state", True):
        model_sd, optim_sd = get_state_dict(model, optimizer, options=opts)
        state = {"model": model_sd, "optimizer": optim_sd}
        with _quiet():
            dcp.load(state, checkpoint_id=str(ckpt))
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"], options=opts)
    else:  # saved before the first update: the optimiser stays fresh (see save_sharded)
        _load_model(ckpt, model)
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
    if restore_rng:
        own = ckpt / f"rng-rank{rank()}.pt"
        rng = torch.load(own if own.is_file() else ckpt / "rng-rank0.pt", weights_only=True)
        set_rng_state(rng)
        if not own.is_file():  # a rank the saving job did not have: its own stream
            torch.manual_seed(int(torch.randint(0, 2**62, (1,))) + rank())
    extra["path"] = str(ckpt)
    return extra
