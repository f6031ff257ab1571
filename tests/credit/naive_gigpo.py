"""A straightforward per-row GiGPO written after the reference code's loops (tests, benchmark)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from creditgym.credit.similarity import greedy_cluster_naive


def naive_gigpo(group, traj, anchor, reward, *, valid=None, gamma=0.95, step_weight=1.0,
                norm="std", invalid_penalty=0.0, episode_stats="trajectory", similarity=None):
    n = len(reward)
    reward = [float(x) for x in reward]
    valid = [True] * n if valid is None else [bool(v) for v in valid]
    pen = [invalid_penalty * (not v) for v in valid]
    # discounted returns, quadratic lookups like the reference
    G = [0.0] * n
    keys = [(group[i], traj[i]) for i in range(n)]
    for key in dict.fromkeys(keys):
        idx = [i for i in range(n) if keys[i] == key]
        run = 0.0
        for i in reversed(idx):
            run = reward[i] + gamma * run
            G[i] = run
    R = defaultdict(float)
    for i in range(n):
        R[(group[i], traj[i])] += reward[i]
    score = [R[(group[i], traj[i])] - pen[i] for i in range(n)]
    pools = defaultdict(list)
    seen = set()
    for i in range(n):
        key = (group[i], traj[i])
        if episode_stats == "trajectory":
            if key in seen:
                continue
            seen.add(key)
            pools[group[i]].append(R[key])
        else:
            pools[group[i]].append(score[i])
    a_ep = [_norm(score[i], pools[group[i]], norm, singleton_raw=True) for i in range(n)]
    ghat = [G[i] - pen[i] for i in range(n)]
    sg = {}
    if similarity is None:
        for i in range(n):
            sg[i] = (group[i], anchor[i])
    else:
        for g in dict.fromkeys(group):
            idx = [i for i in range(n) if group[i] == g]
            cl = greedy_cluster_naive([anchor[i] for i in idx], similarity)
            for i, c in zip(idx, cl):
                sg[i] = (g, int(c))
    members = defaultdict(list)
    for i in range(n):
        members[sg[i]].append(ghat[i])
    a_st = [_norm(ghat[i], members[sg[i]], norm, singleton_raw=False) for i in range(n)]
    total = [e + step_weight * s for e, s in zip(a_ep, a_st)]
    return np.array(a_ep), np.array(a_st), np.array(total)


def _norm(x, pool, norm, singleton_raw):
    if len(pool) == 1:
        if not singleton_raw:
            return 0.0
        mean, std = 0.0, 1.0
    else:
        if all(p == pool[0] for p in pool):
            return x - pool[0] if norm == "mean" else (x - pool[0]) / 1e-6
        mean, std = float(np.mean(pool)), float(np.std(pool, ddof=1))
    return x - mean if norm == "mean" else (x - mean) / (std + 1e-6)
