"""Speed of the credit estimators next to naive reference implementations, one table.

Run: ``python benchmarks/credit.py`` (about a minute on 2 cores). Each row times creditgym's
estimator (best of several runs) and a straightforward naive implementation written here, on the
same inputs, and checks that both give the same result. Where the naive code is quadratic or slow
it is measured on a smaller size and extrapolated (the row says so).
"""

from __future__ import annotations

import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from creditgym.credit import gigpo, grpo, igpo, oprl, tempo
from creditgym.credit.similarity import greedy_cluster, greedy_cluster_naive


def best(fn, repeat=5):
    out, t_best = None, float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        t_best = min(t_best, time.perf_counter() - t)
    return t_best, out


# ----------------------------------------------------------------- GiGPO, exact anchors
def gigpo_rows(tasks, n=8, turns=50, seed=0):
    rng = np.random.default_rng(seed)
    rows = tasks * n * turns
    group = np.repeat(np.arange(tasks), n * turns)
    traj = np.repeat(np.arange(tasks * n), turns)
    anchor = [f"task{g}-state{s}" for g, s in zip(group, rng.integers(0, 60, rows))]
    reward = (rng.random(rows) < 0.05).astype(np.float64)
    valid = rng.random(rows) > 0.1
    return group, traj, anchor, reward, valid


def naive_gigpo(group, traj, anchor, reward, valid, gamma=0.95, c=0.1):
    """The reference's structure: per-uid np.where scans (quadratic), dict pools, row loops."""
    n = len(reward)
    ret = np.zeros(n)
    by_traj = {}
    for uid in np.unique(traj):
        idx = np.where(traj == uid)[0]
        run, out = 0.0, np.zeros(idx.size)
        for t in reversed(range(idx.size)):
            run = reward[idx[t]] + gamma * run
            out[t] = run
        by_traj[uid] = out
    for i in range(n):  # recombine, one scan per row, as the reference does
        idx = np.where(traj == traj[i])[0]
        ret[i] = by_traj[traj[i]][np.where(idx == i)[0][0]]
    pen = c * (~valid)
    ghat = ret - pen
    R = defaultdict(float)
    for i in range(n):
        R[traj[i]] += reward[i]
    pool = defaultdict(list)
    for u in R:
        pool[group[np.where(traj == u)[0][0]]].append(R[u])
    ep = np.array([(R[traj[i]] - pen[i] - np.mean(pool[group[i]])) /
                   (np.std(pool[group[i]], ddof=1) + 1e-6) for i in range(n)])
    members = defaultdict(list)
    for i in range(n):
        members[(group[i], anchor[i])].append(i)
    st = np.zeros(n)
    for idx in members.values():
        if len(idx) > 1:
            v = ghat[idx]
            st[idx] = 0.0 if (v == v[0]).all() else (v - v.mean()) / (v.std(ddof=1) + 1e-6)
    return ep + st


def bench_gigpo_exact(table):
    args = gigpo_rows(128)
    kw = {"gamma": 0.95, "invalid_penalty": 0.1}
    t_fast, res = best(lambda: gigpo.advantages(*args[:4], valid=args[4], **kw), repeat=7)
    lin = []
    for tasks in (32, 64):
        a = gigpo_rows(tasks)
        lin.append(best(lambda a=a: gigpo.advantages(*a[:4], valid=a[4], **kw), repeat=9)[0])
    t0 = time.perf_counter()
    ref = naive_gigpo(*args)
    t_naive = time.perf_counter() - t0
    assert np.allclose(res.total, ref), "GiGPO fast != naive"
    table.append(("GiGPO exact anchors", "51,200 rows", t_fast, t_naive,
                  (f"gamma 0.95, penalty 0.1, 60 anchor states per task; creditgym at "
                   f"12.8k/25.6k/51.2k rows: {lin[0]*1e3:.1f}/{lin[1]*1e3:.1f}/{t_fast*1e3:.1f} ms; "
                   "naive = the reference's per-row np.where scans"), "<= 30 ms"))


# ----------------------------------------------------------------- GiGPO, similarity anchors
def near_duplicate_texts(groups, rows_per_group=400, seed=0):
    rnd = random.Random(seed)
    words = ["".join(rnd.choices("abcdefghijklmnopqrstuvwxyz", k=rnd.randint(2, 9)))
             for _ in range(4000)]
    out = []
    for _ in range(groups):
        bases = [rnd.choices(words, k=70) for _ in range(30)]
        variants = []
        for b in bases:
            vs = []
            for _ in range(4):
                w = list(b)
                for _ in range(rnd.choice([0, 1, 2, 3, 8])):
                    w[rnd.randrange(len(w))] = rnd.choice(words)
                vs.append(" ".join(w))
            variants.append(vs)
        out.append([rnd.choice(rnd.choice(variants)) for _ in range(rows_per_group)])
    return out


def bench_gigpo_similarity(table):
    groups = near_duplicate_texts(8)
    t_fast, fast = best(lambda: [greedy_cluster(g, 0.9) for g in groups], repeat=3)
    t0 = time.perf_counter()
    slow = [greedy_cluster_naive(g, 0.9) for g in groups]
    t_naive = time.perf_counter() - t0
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow)), "similarity decisions differ"
    n_clusters = np.mean([c.max() + 1 for c in fast])
    table.append(("GiGPO similarity 0.9", "8 groups x 400 rows", t_fast, t_naive,
                  (f"same decisions; texts ~450 chars, {n_clusters:.0f} clusters/group, "
                   "4 edited copies of 30 documents per group"), ">= 20x"))


# ----------------------------------------------------------------- TEMPO
def tempo_data(groups=64, n=8, length=1024, seed=0):
    rng = np.random.default_rng(seed)
    group, tokens = [], []
    for g in range(groups):
        trunk = rng.integers(0, 32000, length)
        for _ in range(n):
            cut = int(rng.integers(50, 501))
            tail = rng.integers(0, 32000, length - cut)
            group.append(g)
            tokens.append(np.concatenate([trunk[:cut], tail]))
    reward = rng.random(len(tokens)).round(1)
    return group, tokens, reward


def bench_tempo(table):
    group, tokens, reward = tempo_data()
    t_fast, fast = best(lambda: tempo.token_advantages(group, tokens, reward), repeat=5)
    t0 = time.perf_counter()
    slow = tempo.token_advantages_naive(group, tokens, reward)
    t_naive = time.perf_counter() - t0
    assert all(np.allclose(a, b) for a, b in zip(fast, slow)), "TEMPO fast != naive"
    table.append(("TEMPO", "64 x 8 x 1,024 tokens", t_fast, t_naive,
                  "naive = dict trie walked token by token", "<= 25 ms"))


# ----------------------------------------------------------------- IGPO / OPRL / GRPO cores
def bench_cores(table):
    rng = np.random.default_rng(0)
    n_traj, T = 1024, 50
    group = np.repeat(np.arange(128), 8)
    probes = [rng.normal(-2, 1, T) for _ in range(n_traj)]
    outcome = rng.random(n_traj)

    def naive_igpo():
        ig, oc = defaultdict(list), defaultdict(list)
        for g, l, o in zip(group, probes, outcome):
            ig[g] += [l[t + 1] - l[t] for t in range(len(l) - 1)]
            oc[g].append(o)
        z = lambda x, p: (x - np.mean(p)) / (np.sqrt(np.var(p) + 1e-8) + 1e-6)
        out = []
        for g, l, o in zip(group, probes, outcome):
            zs = [z(l[t + 1] - l[t], ig[g]) for t in range(len(l) - 1)] + [z(o, oc[g])]
            out.append(np.cumsum(zs[::-1])[::-1])
        return out

    t_fast, fast = best(lambda: igpo.turn_advantages(group, probes, outcome), repeat=7)
    t0 = time.perf_counter()
    slow = naive_igpo()
    t_naive = time.perf_counter() - t0
    assert all(np.allclose(a, b) for a, b in zip(fast, slow)), "IGPO fast != naive"
    table.append(("IGPO turn advantages", "51,200 rows", t_fast, t_naive, "", "<= 10 ms"))

    rows_g = np.repeat(group, T)
    rows_t = np.repeat(np.arange(n_traj), T)
    q = rng.normal(size=n_traj * T)
    ep = (rng.random(n_traj) > 0.5).astype(float)

    def fast_oprl():
        s = oprl.step_rewards(q)
        return oprl.advantages(rows_g, rows_t, ep, s), oprl.trajectory_dpo_loss(rows_g, rows_t, q, ep)

    def naive_oprl():
        s = 0.05 * q / (np.abs(0.05 * q).max() + 1e-6)
        by_g = defaultdict(list)
        for i in range(n_traj):
            by_g[group[i]].append(i)
        out = np.zeros(q.size)
        for i in range(n_traj):
            others = [j for j in by_g[group[i]] if j != i]
            base = np.mean([ep[j] for j in others])
            other_s = np.concatenate([s[j * T:(j + 1) * T] for j in others])
            out[i * T:(i + 1) * T] = ep[i] - base + s[i * T:(i + 1) * T] - other_s.mean()
        Q = 0.05 * q.reshape(n_traj, T).mean(1)
        losses = [np.logaddexp(0, -(Q[i] - Q[j])) for g in by_g.values() for i in g for j in g
                  if ep[i] > 0.5 and ep[j] <= 0.5]
        return out, float(np.mean(losses))

    t_fast, (fa, fl) = best(fast_oprl, repeat=7)
    t0 = time.perf_counter()
    na, nl = naive_oprl()
    t_naive = time.perf_counter() - t0
    assert np.allclose(fa, na) and np.isclose(fl, nl), "OPRL fast != naive"
    table.append(("OPRL step rewards + adv + DPO loss", "51,200 rows", t_fast, t_naive, "",
                  "<= 10 ms"))

    g = np.repeat(np.arange(6400), 8)
    r = rng.random(g.size)

    def naive_grpo():
        pools = defaultdict(list)
        for gi, ri in zip(g, r):
            pools[gi].append(ri)
        return np.array([(ri - np.mean(pools[gi])) / (np.std(pools[gi], ddof=1) + 1e-6)
                         for gi, ri in zip(g, r)])

    t_fast, fa = best(lambda: grpo.advantages(g, r), repeat=7)
    t0 = time.perf_counter()
    na = naive_grpo()
    t_naive = time.perf_counter() - t0
    assert np.allclose(fa, na), "GRPO fast != naive"
    table.append(("GRPO", "51,200 rows", t_fast, t_naive, "", "<= 10 ms"))


def main() -> None:
    table: list[tuple] = []
    for bench in (bench_gigpo_exact, bench_gigpo_similarity, bench_tempo, bench_cores):
        bench(table)
    print(f"{'estimator':36} {'size':22} {'creditgym':>11} {'naive':>11} {'speedup':>9}  target")
    for name, size, fast, slow, note, target in table:
        print(f"{name:36} {size:22} {fast*1e3:9.1f}ms {slow*1e3:9.0f}ms {slow/fast:8.0f}x  {target}")
    print()
    for name, _, _, _, note, _ in table:
        if note:
            print(f"- {name}: {note}")


if __name__ == "__main__":
    main()
