"""From trajectory groups to the flat arrays of the estimators, and back to per-token arrays.

``flatten(groups)`` lays the turns of every trajectory out as rows (groups in list order,
trajectories in list order, turns in time order), which is exactly the row contract of the
functional API. ``turns_to_tokens`` broadcasts one value per row to that turn's action tokens,
producing arrays aligned with ``Trajectory.tokens()``; prompt and observation tokens get 0, so the
result is always zero wherever ``loss_mask()`` is 0. ``tokens_to_turns`` reads per-token arrays
back as one value per row (what the credit bench compares against per-turn ground truth).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from creditgym.credit._arrays import CreditInputError, ragged
from creditgym.trajectory import Trajectory


@dataclass(frozen=True)
class TurnBatch:
    """Turn rows of a list of trajectory groups."""

    trajectories: list[Trajectory]
    """All trajectories, group after group."""
    traj_group: np.ndarray
    """Group index of each trajectory."""
    n_turns: np.ndarray
    """Turns of each trajectory."""
    group: np.ndarray
    """Group index of each row."""
    traj: np.ndarray
    """Trajectory index of each row."""
    reward: np.ndarray
    """Per-turn reward of each row."""
    valid: np.ndarray
    """Valid flag of each row."""
    anchors: list[Any]
    """Anchor of each row."""

    @property
    def returns(self) -> np.ndarray:
        """Episode return (sum of turn rewards) of each trajectory."""
        starts = np.cumsum(self.n_turns) - self.n_turns
        return np.add.reduceat(self.reward, starts)

    def outcome(self, key: str | None) -> np.ndarray:
        """Per trajectory: ``metrics[key]``, or the episode return when ``key`` is None."""
        if key is None:
            return self.returns
        out = np.empty(len(self.trajectories))
        for i, t in enumerate(self.trajectories):
            if key not in t.metrics:
                raise CreditInputError(
                    f"trajectory {t.id!r}: metrics has no {key!r} (has {sorted(t.metrics)}); "
                    f"set outcome_key to one of them or to null for the episode return"
                )
            out[i] = float(t.metrics[key])
        return out


def flatten(groups: Sequence[Sequence[Trajectory]]) -> TurnBatch:
    """Rows of all turns; rejects an empty batch, empty groups and trajectories without turns."""
    if len(groups) == 0:
        raise CreditInputError("groups: no trajectory groups given")
    trajs: list[Trajectory] = []
    sizes = []
    for gi, grp in enumerate(groups):
        if len(grp) == 0:
            raise CreditInputError(f"groups[{gi}] is empty; every group needs >= 1 trajectory")
        sizes.append(len(grp))
        trajs.extend(grp)
    n_turns = np.fromiter((t.n_turns for t in trajs), dtype=np.int64, count=len(trajs))
    if (n_turns == 0).any():
        bad = trajs[int(np.flatnonzero(n_turns == 0)[0])]
        raise CreditInputError(f"trajectory {bad.id!r} has no turns; credit needs >= 1 turn")
    traj_group = np.repeat(np.arange(len(sizes)), sizes)
    reward = np.fromiter((r for t in trajs for r in t.rewards), dtype=np.float64)
    valid = np.fromiter((bool(v) for t in trajs for v in t.valid), dtype=bool)
    anchors = [a for t in trajs for a in t.anchors]
    traj = np.repeat(np.arange(len(trajs)), n_turns)
    return TurnBatch(trajs, traj_group, n_turns, traj_group[traj], traj, reward, valid, anchors)


def per_turn_input(name: str, inputs: Mapping[str, Any] | None, batch: TurnBatch,
                   estimator: str) -> np.ndarray:
    """Flat per-row values of ``inputs[name]``: a mapping trajectory id -> one value per turn,
    or a list aligned with ``batch.trajectories``."""
    if not inputs or name not in inputs:
        raise CreditInputError(
            f"{estimator} needs inputs[{name!r}] (one value per turn of each trajectory, "
            f"computed by the trainer), but it was not given"
        )
    src = inputs[name]
    if isinstance(src, Mapping):
        missing = [t.id for t in batch.trajectories if t.id not in src]
        if missing:
            raise CreditInputError(f"inputs[{name!r}] has no entry for trajectory {missing[0]!r}")
        seqs = [src[t.id] for t in batch.trajectories]
    else:
        seqs = list(src)
        if len(seqs) != len(batch.trajectories):
            raise CreditInputError(
                f"inputs[{name!r}] has {len(seqs)} entries for {len(batch.trajectories)} trajectories"
            )
    flat, lengths = ragged(f"inputs[{name!r}]", seqs)
    if (lengths != batch.n_turns).any():
        i = int(np.flatnonzero(lengths != batch.n_turns)[0])
        raise CreditInputError(
            f"inputs[{name!r}] for trajectory {batch.trajectories[i].id!r} has {lengths[i]} "
            f"values but the trajectory has {batch.n_turns[i]} turns"
        )
    return flat


def _pieces(batch: TurnBatch) -> tuple[np.ndarray, np.ndarray]:
    """Per trajectory [prompt, a_0, o_0, a_1, o_1, ...] lengths, flat, and the split sizes."""
    sizes = []
    for t in batch.trajectories:
        sizes.append(len(t.prompt_ids))
        for a, o in zip(t.action_ids, t.observation_ids):
            sizes.append(len(a))
            sizes.append(len(o))
    pieces = np.asarray(sizes, dtype=np.int64)
    per_traj = 1 + 2 * batch.n_turns
    return pieces, per_traj


def turns_to_tokens(batch: TurnBatch, values: np.ndarray) -> list[np.ndarray]:
    """Per-row values -> per-token arrays aligned with each ``tokens()``; 0 off the actions."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != batch.traj.shape:
        raise CreditInputError(f"values: expected {batch.traj.size} rows, got shape {values.shape}")
    pieces, per_traj = _pieces(batch)
    first, action_slot = _action_slots(batch, per_traj)
    # piece values: 0 for the prompt, v_t for action t, 0 for observation t
    filler = np.zeros(pieces.size)
    filler[action_slot] = values
    flat = np.repeat(filler, pieces)
    token_counts = np.add.reduceat(pieces, first)
    return np.split(flat, np.cumsum(token_counts)[:-1])


def _action_slots(batch: TurnBatch, per_traj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each trajectory's prompt piece, and of each row's action piece, in ``_pieces``."""
    first = np.cumsum(per_traj) - per_traj
    rows = batch.traj.size
    action_slot = np.repeat(first + 1, batch.n_turns) + 2 * (
        np.arange(rows) - np.repeat(np.cumsum(batch.n_turns) - batch.n_turns, batch.n_turns)
    )
    return first, action_slot


def tokens_to_turns(batch: TurnBatch, per_token: Sequence[Any]) -> np.ndarray:
    """The inverse of :func:`turns_to_tokens`: per row, the value on that turn's action tokens.

    Estimators that give a turn one value (most) get it back exactly; where the action tokens
    of a turn differ (TEMPO's per-token values) their mean stands for the turn. A turn without
    action tokens gets 0 (no token of it receives any credit)."""
    if len(per_token) != len(batch.trajectories):
        raise CreditInputError(f"per_token: expected {len(batch.trajectories)} arrays (one per "
                               f"trajectory), got {len(per_token)}")
    pieces, per_traj = _pieces(batch)
    first, action_slot = _action_slots(batch, per_traj)
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in per_token]
    expected = np.add.reduceat(pieces, first)
    for i, (a, n) in enumerate(zip(arrays, expected)):
        if a.size != n:
            raise CreditInputError(f"per_token[{i}] (trajectory {batch.trajectories[i].id!r}) has "
                                   f"{a.size} values for {n} tokens; align it with tokens()")
    row_of_piece = np.full(pieces.size, -1, dtype=np.int64)
    row_of_piece[action_slot] = np.arange(action_slot.size)
    row_of_token = np.repeat(row_of_piece, pieces)
    on_action = row_of_token >= 0
    values = np.concatenate(arrays)[on_action]  # flatten() never gives an empty batch
    # action tokens come out in row order, each row's contiguous: segment reductions apply
    counts = pieces[action_slot]
    out = np.zeros(action_slot.size)
    has = counts > 0
    if has.any():
        starts = (np.cumsum(counts) - counts)[has]
        low = np.minimum.reduceat(values, starts)
        high = np.maximum.reduceat(values, starts)
        mean = np.add.reduceat(values, starts) / counts[has]
        out[has] = np.where(low == high, low, mean)
    return out


def responses(batch: TurnBatch) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per trajectory: response token ids after the prompt and their policy mask."""
    toks, masks = [], []
    for t in batch.trajectories:
        p = len(t.prompt_ids)
        toks.append(t.tokens()[p:])
        masks.append(t.loss_mask()[p:].astype(bool))
    return toks, masks
