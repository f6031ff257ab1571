"""Shared array plumbing for the credit estimators: validation, factorisation, segment statistics.

Everything here is vectorised with numpy (``bincount``, ``unique``/inverse indices, fancy
indexing); the only Python loops run over *positions inside a trajectory* (at most the longest
trajectory's length), never over rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from creditgym.errors import CreditGymError

EPS = 1e-6


class CreditInputError(CreditGymError, ValueError):
    """Inputs of a credit estimator are malformed (wrong length, NaN, non-contiguous rows, ...)."""


def as_float(name: str, values: Any) -> np.ndarray:
    """``values`` as a finite 1-D float64 array; the error names the array."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CreditInputError(f"{name}: expected numbers, got {exc}") from None
    if arr.ndim != 1:
        raise CreditInputError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise CreditInputError(f"{name}: value at row {bad} is {arr[bad]} (NaN/inf are not allowed)")
    return arr


def check_lengths(**arrays: Sequence[Any]) -> int:
    """All arrays have one length; returns it. The error names every array with its length."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise CreditInputError(f"arrays must have the same length, got {desc}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise CreditInputError(
            f"{', '.join(lengths)}: no rows given; an estimator needs at least one non-empty group"
        )
    return n


def to_hashable(x: Any) -> Any:
    """A hashable key for an anchor: lists/arrays become tuples, dicts sorted item tuples."""
    if isinstance(x, (str, bytes, int, float, bool)) or x is None:
        return x
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        return x.item()
    if isinstance(x, np.ndarray):
        return tuple(to_hashable(e) for e in x.ravel().tolist())
    if isinstance(x, (list, tuple)):
        return tuple(to_hashable(e) for e in x)
    if isinstance(x, dict):
        return tuple(sorted((str(k), to_hashable(v)) for k, v in x.items()))
    try:
        hash(x)
    except TypeError:
        raise CreditInputError(
            f"a value of type {type(x).__name__} cannot be used as a key (use strings, numbers, "
            "or lists, tuples, dicts and arrays of them)") from None
    return x


def factorize(name: str, values: Any) -> tuple[np.ndarray, int]:
    """Integer codes 0..k-1 for arbitrary keys (equal keys, equal codes): a 1-D numeric array's
    codes are its keys' ranks in sorted order, other keys are numbered in order of first
    appearance. ``name`` (what the keys are: ``group``, ``anchor``) labels the error for a key
    that cannot be hashed even after ``to_hashable``."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf" and values.ndim == 1:
        if values.dtype.kind == "b":
            values = values.astype(np.int64)
        if values.dtype.kind in "iu" and values.size and values.min() >= 0 \
                and values.max() < 4 * values.size + 1024:
            present = np.bincount(values)  # small non-negative ints: no sort needed
            rank = np.cumsum(present > 0) - 1
            return rank[values].astype(np.int64), int(rank[-1] + 1)
        uniq, inv = np.unique(values, return_inverse=True)
        return inv.ravel().astype(np.int64), int(uniq.size)
    seen: dict[Any, int] = {}
    if isinstance(values, np.ndarray):
        values = values.tolist() if values.dtype != object else list(values)
    try:
        codes = [seen.setdefault(v, len(seen)) for v in values]
    except TypeError:  # unhashable keys (lists, dicts, arrays): convert them first
        seen.clear()
        try:
            codes = [seen.setdefault(to_hashable(v), len(seen)) for v in values]
        except CreditInputError as exc:
            raise CreditInputError(f"{name}: {exc}") from None
    return np.fromiter(codes, dtype=np.int64, count=len(codes)), len(seen)


@dataclass(frozen=True)
class Rows:
    """Row layout of a flat batch: trajectories as contiguous runs of rows inside groups."""

    group: np.ndarray  # group code per row
    traj: np.ndarray  # trajectory code per row (0..n_traj-1, in row order)
    starts: np.ndarray  # first row of each trajectory
    lengths: np.ndarray  # rows of each trajectory
    traj_group: np.ndarray  # group code of each trajectory
    n_groups: int

    @property
    def n_traj(self) -> int:
        return int(self.starts.size)


def row_layout(group: Any, traj: Any) -> Rows:
    """Validate and describe ``group``/``traj`` row keys (rows of one trajectory contiguous)."""
    n = check_lengths(group=group, traj=traj)
    g, n_groups = factorize("group", group)
    t, n_t = factorize("traj", traj)
    key = g * max(n_t, 1) + t  # a trajectory is the pair (group, traj)
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(key[1:], key[:-1], out=change[1:])
    starts = np.flatnonzero(change)
    n_keys = n_groups * max(n_t, 1)
    distinct = (np.count_nonzero(np.bincount(key, minlength=n_keys)) if n_keys <= 8 * n + 1024
                else np.unique(key).size)
    if distinct != starts.size:
        _, first = np.unique(key[starts], return_index=True)
        dup = np.setdiff1d(np.arange(starts.size), first)[0]
        raise CreditInputError(
            f"traj: rows of one trajectory must be contiguous; trajectory {_label(traj, starts[dup])} "
            f"reappears at row {int(starts[dup])} after other rows"
        )
    lengths = np.diff(np.append(starts, n))
    traj_code = np.repeat(np.arange(starts.size), lengths)
    return Rows(g, traj_code, starts, lengths, g[starts], n_groups)


def per_trajectory(name: str, values: Any, rows: Rows) -> np.ndarray:
    """One value per trajectory of ``rows``: ``values`` given per row (constant inside each
    trajectory) or once per trajectory, in the order trajectories first appear."""
    v = as_float(name, values)
    if v.size == rows.traj.size:
        per = v[rows.starts]
        if (v != per[rows.traj]).any():
            bad = int(np.flatnonzero(v != per[rows.traj])[0])
            raise CreditInputError(f"{name}: value changes inside a trajectory at row {bad}")
        return per
    if v.size == rows.n_traj:
        return v
    raise CreditInputError(
        f"{name}: expected one value per row ({rows.traj.size}) or per trajectory "
        f"({rows.n_traj}), got {v.size}"
    )


def mean_abs(x: np.ndarray) -> float:
    """Mean absolute value (0 for an empty array): the estimators' size diagnostics."""
    return float(np.abs(x).mean()) if x.size else 0.0


def _label(values: Any, i: int) -> str:
    try:
        return repr(values[int(i)])
    except Exception:  # noqa: BLE001 - only for an error message
        return f"at row {int(i)}"


def reverse_discounted_sum(values: np.ndarray, rows: Rows, gamma: float) -> np.ndarray:
    """``G_t = x_t + gamma * G_{t+1}`` inside each trajectory, the reference's recursion order.

    Vectorised across trajectories: one numpy step per position counted from the end, so the
    cost is linear in rows plus a small constant per position of the longest trajectory.
    """
    n = values.size
    rpos = np.repeat(rows.starts + rows.lengths - 1, rows.lengths) - np.arange(n)
    order = np.argsort(rpos, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(rpos))))
    out = np.empty(n, dtype=np.float64)
    idx = order[: bounds[1]]
    out[idx] = values[idx]
    for k in range(1, bounds.size - 1):
        idx = order[bounds[k] : bounds[k + 1]]
        out[idx] = values[idx] + gamma * out[idx + 1]
    return out


@dataclass(frozen=True)
class SegStats:
    """Per-segment count, mean (exact where all members are equal) and std (0 there)."""

    count: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    std: np.ndarray


def seg_stats(x: np.ndarray, seg: np.ndarray, n_seg: int, *, ddof: int) -> SegStats:
    count = np.bincount(seg, minlength=n_seg).astype(np.float64)
    safe = np.maximum(count, 1.0)
    mean = np.bincount(seg, weights=x, minlength=n_seg) / safe
    ref = np.zeros(n_seg)
    ref[seg] = x  # any member of each segment
    differs = np.bincount(seg, weights=(x != ref[seg]).astype(np.float64), minlength=n_seg) > 0
    mean = np.where(differs, mean, ref)  # exact mean where all equal, so x - mean == 0 exactly
    dev = x - mean[seg]
    ss = np.bincount(seg, weights=dev * dev, minlength=n_seg)
    var = np.where(differs, ss / np.maximum(count - ddof, 1.0), 0.0)
    return SegStats(count, mean, var, np.sqrt(var))


def zscore(x: np.ndarray, seg: np.ndarray, stats: SegStats, norm: str) -> np.ndarray:
    """``x - mean`` (``norm="mean"``) or ``(x - mean) / (std + eps)`` (``norm="std"``)."""
    dev = x - stats.mean[seg]
    if norm == "mean":
        return dev
    if norm == "std":
        return dev / (stats.std[seg] + EPS)
    raise CreditInputError(f"norm: {norm!r} is not one of 'std', 'mean'")


def split(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """Cut a flat array into consecutive pieces of the given lengths."""
    return np.split(flat, np.cumsum(lengths)[:-1]) if lengths.size else []


def ragged(name: str, seqs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate a list of 1-D number sequences: (flat float64 array, lengths)."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    if lengths.size == 0:
        return np.zeros(0), lengths
    try:
        flat = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in seqs])
    except (TypeError, ValueError) as exc:
        raise CreditInputError(f"{name}: expected sequences of numbers ({exc})") from None
    return as_float(name, flat), lengths
