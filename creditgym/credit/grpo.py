"""GRPO: episode-level group-relative advantages, the baseline every other method extends.

``A_i = (R_i - mean_g R) / (std_g R + eps)`` (``norm="std"``, unbiased std, eps 1e-6) or
``A_i = R_i - mean_g R`` (``norm="mean"``). A group of one gets 0; a group whose returns are all
equal gets exactly 0 (advantage collapse, never NaN).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from creditgym.credit._arrays import as_float, check_lengths, factorize, seg_stats, zscore


def advantages(group: Any, reward: Any, *, norm: str = "std") -> np.ndarray:
    """One advantage per trajectory; ``group`` and ``reward`` hold one entry per trajectory."""
    check_lengths(group=group, reward=reward)
    g, n_groups = factorize("group", group)
    r = as_float("reward", reward)
    st = seg_stats(r, g, n_groups, ddof=1)
    out = zscore(r, g, st, norm)
    out[st.count[g] == 1] = 0.0
    return out
