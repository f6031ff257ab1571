"""Training checkpoints that resume exactly and survive a crash mid-write.

Layout under a run's checkpoint directory::

    step-000123/   model.pt  optimizer.pt  scheduler.pt  rng.pt  extra.json
    latest         text file naming the newest complete step directory ("step-000123")

A save writes everything into a hidden ``.tmp-step-000123-*`` directory, fsyncs the files and
the directory, renames it to ``step-000123`` (atomic on POSIX), then replaces ``latest`` the same
way (temp file, fsync, rename). A crash at any point leaves either the old or the new checkpoint
as ``latest``, never a torn one; leftover temp directories are ignored and removed by the next
save. Loading uses ``torch.load(weights_only=True)``: the files hold only tensors, numbers,
strings, lists and dicts (RNG states included), never pickled objects. ``extra`` (data position,
metrics, config) is JSON.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from creditgym.errors import CreditGymError
from creditgym.files import atomic_write_text, fsync_dir
from creditgym.json_values import to_plain

STEP_DIR = re.compile(r"^step-(\d+)$")
LATEST = "latest"


class CheckpointError(CreditGymError, RuntimeError):
    """A checkpoint is missing, incomplete or cannot be written."""


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU (and CUDA) generator states as weights_only-safe values."""
    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state((nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"],
                         nps["has_gauss"], nps["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    """Complete step directories under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / "extra.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(directory: str | Path, step: int, *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                    extra: dict[str, Any] | None = None, keep_last: int | None = 3) -> Path:
    """Write ``directory/step-{step:06d}`` atomically, point ``latest`` at it, prune old ones.

    ``extra`` must be JSON-serialisable (numpy/torch scalars and arrays are converted);
    ``keep_last`` keeps that many newest step directories (None: keep all); the checkpoint just
    written and the one ``latest`` names are never deleted.
    """
    if keep_last is not None and keep_last < 1:
        raise CheckpointError(f"keep_last must be >= 1 or None, got {keep_last}")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{int(step):06d}"
    try:
        extra_json = json.dumps(to_plain({**(extra or {}), "step": int(step)}, strict=True),
                                indent=1)
    except TypeError as exc:
        raise CheckpointError(f"checkpoint extra is not JSON-serialisable: {exc}; store plain "
                              f"numbers, strings, lists and dicts") from None
    for stale in root.glob(".tmp-*"):  # left by a crashed save; only one writer per run
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        _save(model.state_dict(), tmp / "model.pt")
        _save(optimizer.state_dict() if optimizer is not None else {}, tmp / "optimizer.pt")
        _save(scheduler.state_dict() if scheduler is not None else {}, tmp / "scheduler.pt")
        _save(rng_state(), tmp / "rng.pt")
        # extra.json is written last: its presence marks a complete directory
        with open(tmp / "extra.json", "w") as f:
            f.write(extra_json)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        final = root / name
        if final.exists():  # re-saving a step: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".tmp-old-{name}-", dir=root))
            os.replace(final, old / name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST, name + "\n")
    if keep_last is not None:
        for _, path in _step_dirs(root)[:-keep_last]:
            if path != final:
                shutil.rmtree(path, ignore_errors=True)
    return final


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The step directory ``latest`` names, else the highest complete one; None if there is none.

    Temp directories of interrupted saves are never returned.
    """
    root = Path(directory)
    pointer = root / LATEST
    if pointer.is_file():
        target = root / pointer.read_text().strip()
        if STEP_DIR.match(target.name) and (target / "extra.json").is_file():
            return target
    dirs = _step_dirs(root)
    return dirs[-1][1] if dirs else None


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    if STEP_DIR.match(path.name) and path.is_dir():
        if not (path / "extra.json").is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete (no extra.json)")
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise CheckpointError(f"no checkpoint under {path}: expected a step-NNNNNN directory or "
                              f"a directory holding them (written by save_checkpoint)")
    return found


def load_checkpoint(path: str | Path, *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                    restore_rng: bool = True, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Restore model (and optimiser, scheduler, RNG) from a step directory or a run directory.

    Returns ``extra`` as saved, with ``step`` and ``path`` (the step directory) added.
    """
    ckpt = _resolve(path)

    def load(name: str) -> Any:
        return torch.load(ckpt / name, map_location=map_location, weights_only=True)

    model.load_state_dict(load("model.pt"))
    if optimizer is not None:
        state = load("optimizer.pt")
        if not state:
            raise CheckpointError(f"{ckpt} holds no optimizer state (saved without one)")
        optimizer.load_state_dict(state)
    if scheduler is not None:
        state = load("scheduler.pt")
        if not state:
            raise CheckpointError(f"{ckpt} holds no scheduler state (saved without one)")
        scheduler.load_state_dict(state)
    if restore_rng:
        set_rng_state(load("rng.pt"))
    extra = json.loads((ckpt / "extra.json").read_text())
    extra["path"] = str(ckpt)
    return extra
