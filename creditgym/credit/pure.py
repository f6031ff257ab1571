"""PURE min-form credit (arXiv 2504.15275): ``r'_k = softmax_k(-r_k / T) * r_k`` per response.

The weights concentrate on the worst step, so ``sum_k r'_k ~ min_k r_k``: the value of a prefix
is its worst future step, which stops a policy from farming many mildly positive PRM steps.
Example (T = 0.1): ``[0.9, -0.5, 0.8] -> [~0, -0.5, ~0]``; ``[0.7, 0.6] -> [0.188, 0.439]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from creditgym.credit._arrays import CreditInputError, as_float


def min_form(step_reward: Any, *, temperature: float = 0.1, lengths: Any = None) -> np.ndarray:
    """Min-form transform of the step rewards of one response.

    ``lengths`` (optional) cuts a flat array into several consecutive responses, each
    transformed on its own (vectorised); without it the whole array is one response.
    """
    if not temperature > 0:
        raise CreditInputError(f"temperature: must be > 0, got {temperature!r}")
    r = as_float("step_reward", step_reward)
    if lengths is None:
        seg = np.zeros(r.size, dtype=np.int64)
        n_seg = 1
    else:
        lens = np.asarray(lengths, dtype=np.int64)
        if (lens < 0).any() or lens.sum() != r.size:
            raise CreditInputError(
                f"lengths: must be non-negative and sum to len(step_reward)={r.size}, "
                f"got sum {int(lens.sum())}"
            )
        seg = np.repeat(np.arange(lens.size), lens)
        n_seg = lens.size
    if r.size == 0:
        return r
    z = -r / temperature
    zmax = np.full(n_seg, -np.inf)
    np.maximum.at(zmax, seg, z)
    w = np.exp(z - zmax[seg])
    w /= np.bincount(seg, weights=w, minlength=n_seg)[seg]
    return w * r
