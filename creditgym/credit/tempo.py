"""TEMPO: prefix-tree token advantages (arXiv 2509.18314).

Within a group the responses' token sequences form a trie. ``V(s)`` is the mean outcome of the
members whose sequence passes through prefix ``s`` (``V(root) = mean_g R``). Token t of response i,
with prefix ``s_t`` before it and ``s_{t+1}`` after it, gets

    A_{i,t} = ((R_i - mean_g R) + V(s_{t+1}) - V(s_t)) / (std_g R + eps)

(unbiased std, eps 1e-6). Where nobody branches off at token t the TD term is 0 and TEMPO equals
GRPO. Multi-turn: observation tokens are part of the trie; ``policy_mask`` zeroes them in the
result (unlike the official code we do not stop at the first masked token). A group of one or a
group of equal outcomes gives 0.

Vectorised, no trie walk: response j passes through response i's prefix of length L iff their
longest common prefix ``LCP(i, j) >= L``. Pairwise LCPs come from one broadcast comparison per
chunk of equal-size groups; ``V_i(L) = sum_j R_j [LCP_ij >= L] / #{j: LCP_ij >= L}`` is a reverse
cumulative sum over L of ``R_j`` scattered at ``LCP_ij``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from creditgym.credit._arrays import (
    EPS,
    CreditInputError,
    as_float,
    check_lengths,
    factorize,
    mean_abs,
    seg_stats,
)
from creditgym.credit.adapter import TurnBatch, responses
from creditgym.credit.registry import register_estimator

_CHUNK_ELEMENTS = 1 << 24  # bound on padded tokens (and compared pairs x width) per chunk


def token_advantages(
    group: Any,
    tokens: Sequence[Sequence[int]],
    reward: Any,
    *,
    policy_mask: Sequence[Sequence[Any]] | None = None,
) -> list[np.ndarray]:
    """One float64 array per response, ``len(tokens[i])`` long; masked positions are 0."""
    if policy_mask is None:
        check_lengths(group=group, tokens=tokens, reward=reward)
    else:
        check_lengths(group=group, tokens=tokens, reward=reward, policy_mask=policy_mask)
    g, n_groups = factorize("group", group)
    r = as_float("reward", reward)
    seqs = [np.asarray(t).ravel() for t in tokens]
    for i, s in enumerate(seqs):
        if s.size and s.dtype.kind not in "iub":
            raise CreditInputError(f"tokens[{i}]: token ids must be integers, got {s.dtype}")
    lens = np.fromiter((s.size for s in seqs), dtype=np.int64, count=len(seqs))
    st = seg_stats(r, g, n_groups, ddof=1)
    live = (st.count > 1) & (st.std > 0)  # other groups give exactly 0
    scale = np.where(live, 1.0 / (st.std + EPS), 0.0)
    flat = np.repeat((r - st.mean[g]) * scale[g], lens)  # the GRPO part of every token
    offset = np.cumsum(lens) - lens
    members = np.argsort(g, kind="stable")
    sizes = np.bincount(g, minlength=n_groups)
    first = np.cumsum(sizes) - sizes
    for n in np.unique(sizes[live]).tolist():
        gids = np.flatnonzero(live & (sizes == n))
        m = members[first[gids][:, None] + np.arange(n)]  # (groups, n) response indices
        step = max(1, _CHUNK_ELEMENTS // max(1, n * int(lens[m].max())))
        for c in range(0, gids.size, step):
            _branch_terms(m[c : c + step], seqs, lens, r, scale[gids[c : c + step]], offset, flat)
    if policy_mask is not None:
        masks = [np.asarray(mk, dtype=bool).ravel() for mk in policy_mask]
        for i, mk in enumerate(masks):
            if mk.size != lens[i]:
                raise CreditInputError(
                    f"policy_mask[{i}] has {mk.size} entries but tokens[{i}] has {lens[i]}"
                )
        if masks:
            flat[~np.concatenate(masks)] = 0.0
    return np.split(flat, np.cumsum(lens)[:-1]) if lens.size else []


def _pairwise_lcp(P: np.ndarray, ln: np.ndarray) -> np.ndarray:
    """LCP of every pair of rows of ``P`` (padded token rows of lengths ``ln``), shape (n, n)
    per group of P's leading axis. Compares in blocks of doubling width and drops a pair at its
    first mismatch, so the work follows the shared prefixes rather than the full lengths."""
    n_g, n, L = P.shape
    iu, ju = np.triu_indices(n, 1)
    flatP = P.reshape(n_g * n, L)
    base = (np.arange(n_g) * n)[:, None]
    pa, pb = (base + iu).ravel(), (base + ju).ravel()
    lnf = ln.ravel()
    minlen = np.minimum(lnf[pa], lnf[pb])
    lcp = minlen.copy()
    active = np.flatnonzero(minlen > 0)
    start, width = 0, 64
    while active.size and start < L:
        w = max(1, min(width, _CHUNK_ELEMENTS // active.size))
        end = min(L, start + w)
        blk = flatP[pa[active], start:end] != flatP[pb[active], start:end]
        hit = blk.any(axis=1)
        done = active[hit]
        lcp[done] = np.minimum(start + blk[hit].argmax(axis=1), minlen[done])
        active = active[~hit & (minlen[active] > end)]
        start, width = end, width * 2
    out = np.empty((n_g, n, n), dtype=np.int64)
    out[:, iu, ju] = lcp.reshape(n_g, -1)
    out[:, ju, iu] = lcp.reshape(n_g, -1)
    out[:, np.arange(n), np.arange(n)] = ln
    return out


def _branch_terms(m, seqs, lens, r, scale, offset, flat) -> None:
    """Add the TD terms ``V(s_{t+1}) - V(s_t)`` of the responses ``m`` (groups x n) to ``flat``.

    For response i, ``V`` only changes where another member branches off, i.e. at t = LCP(i, j);
    sorting ``LCP(i, .)`` in decreasing order, the members through the prefix of length L are a
    leading block, so ``V`` is a running mean of the sorted outcomes at the end of tie blocks.
    """
    n_g, n = m.shape
    ln = lens[m]
    L = int(ln.max())
    if L == 0:
        return
    P = np.full((n_g, n, L), -1, dtype=np.int64)
    for (a, b), k in np.ndenumerate(m):
        P[a, b, : ln[a, b]] = seqs[k]
    lcp = _pairwise_lcp(P, ln)  # (g, i, j)
    order = np.argsort(-lcp, axis=-1, kind="stable")
    ls = np.take_along_axis(lcp, order, axis=-1)
    rs = r[np.take_along_axis(np.broadcast_to(m[:, None, :], lcp.shape), order, axis=-1)]
    vmean = np.cumsum(rs, axis=-1) / np.arange(1, n + 1)  # mean of the k+1 leading members
    idx = np.arange(n)
    is_end = np.ones(ls.shape, dtype=bool)
    is_end[..., :-1] = ls[..., :-1] != ls[..., 1:]
    block_end = np.minimum.accumulate(np.where(is_end, idx, n)[..., ::-1], axis=-1)[..., ::-1]
    vblock = np.take_along_axis(vmean, block_end, axis=-1)
    # a drop after position k: at t = ls[k+1] the members beyond k leave the prefix
    drop = is_end[..., :-1] & (ls[..., 1:] < ln[:, :, None])
    gi, ii, kk = np.nonzero(drop)
    pos = offset[m[gi, ii]] + ls[gi, ii, kk + 1]
    flat[pos] += (vblock[gi, ii, kk] - vblock[gi, ii, kk + 1]) * scale[gi]


def token_advantages_naive(group, tokens, reward, *, policy_mask=None) -> list[np.ndarray]:
    """Reference: an explicit dict trie per group, walked token by token (tests, benchmark)."""
    g, _ = factorize("group", group)
    r = as_float("reward", reward)
    out: list[np.ndarray] = []
    tries: dict[int, dict] = {}
    for k, seq in enumerate(tokens):  # build: each node holds [sum, count, children]
        node = tries.setdefault(int(g[k]), [0.0, 0, {}])
        node[0] += r[k]
        node[1] += 1
        for tok in seq:
            node = node[2].setdefault(int(tok), [0.0, 0, {}])
            node[0] += r[k]
            node[1] += 1
    for k, seq in enumerate(tokens):
        members = r[g == g[k]]
        root = tries[int(g[k])]
        adv = np.zeros(len(seq))
        if members.size > 1 and not (members == members[0]).all():
            mean, std = members.mean(), members.std(ddof=1)
            node = root
            for t, tok in enumerate(seq):
                child = node[2][int(tok)]
                adv[t] = (r[k] - mean + child[0] / child[1] - node[0] / node[1]) / (std + EPS)
                node = child
        if policy_mask is not None:
            adv[~np.asarray(policy_mask[k], dtype=bool)] = 0.0
        out.append(adv)
    return out


@dataclass
class TEMPOConfig:
    """TEMPO: prefix-tree token advantages over whole responses (observations included)."""

    outcome_key: str | None = None
    """Metric used as R; null: the episode return."""


@register_estimator("tempo", TEMPOConfig)
def from_trajectories(batch: TurnBatch, config: TEMPOConfig, inputs: Mapping[str, Any]):
    """Token advantages of each response (after the prompt), 0 on prompt and observations."""
    toks, masks = responses(batch)
    adv = token_advantages(batch.traj_group, toks, batch.outcome(config.outcome_key),
                           policy_mask=masks)
    out = [np.concatenate([np.zeros(len(t.prompt_ids)), a])
           for t, a in zip(batch.trajectories, adv)]
    flat = np.concatenate(adv) if adv else np.zeros(0)
    return out, {"mean_abs_token": mean_abs(flat[np.concatenate(masks)])}
