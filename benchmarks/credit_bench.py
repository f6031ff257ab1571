"""Speed of ``creditgym credit-bench`` on a 3,200-trajectory file (400 groups x 8): goal < 1 min.

Run: ``python benchmarks/credit_bench.py [--groups 400] [--group-size 8] [--out FILE]``.
The file is made by playing the built-in world's scripted expert (``world.expert``) through the
real SearchEnv (bm25s index; 1-4 hop questions, 3 passages of 300 characters, 6 turns) with
seeded deliberate mistakes per member: giving up at once (``skip_search_prob``), answering a
bridge entity (``early_answer_prob``), and detours that do not advance the expert (an off-chain
search, a repeated search, an invalid action), so every label occurs and groups disagree.
Token ids come from a word-level vocabulary built on the fly (the bench only needs ids that are
equal where the text is). Then the command itself is timed in a fresh process (startup,
reading, labels, every estimator), and the estimators once more in-process, one row each.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from creditgym.envs.demonstration import call_text
from creditgym.envs.world.expert import expert_action
from creditgym.trajectory import Trajectory

ENV_ID = "creditgym/Search-v0"
ENV_KWARGS = {"split": "train", "world_backend": "bm25s", "top_k": 3, "max_passage_chars": 300,
              "max_turns": 6}
MISTAKES = {"skip_search_prob": 0.15, "early_answer_prob": 0.2, "detour_prob": 0.25}


class WordIds:
    """Word-level token ids, assigned in order of first sight (deterministic for one input)."""

    _pattern = re.compile(r"\w+|[^\w\s]|\s+")

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, text: str) -> list[int]:
        return [self.vocab.setdefault(w, len(self.vocab)) for w in self._pattern.findall(text)]


def make_policy(task, rng: random.Random, off_chain: list[str], syntax: str):
    """The expert with seeded mistakes; detours leave the expert's own turn count alone."""
    state = {"hop": 0, "obs": task.question, "expert_last": True, "query": None}

    def policy(obs: str, turn: int) -> str:
        if state["expert_last"]:
            state["obs"] = obs  # the expert reads only what its own last action returned
        if turn > 0 and rng.random() < MISTAKES["detour_prob"]:
            state["expert_last"] = False
            kind = rng.choice(("off_chain", "repeat", "invalid"))
            if kind == "invalid":
                return "I should look this up <search"
            query = state["query"] if kind == "repeat" and state["query"] else rng.choice(off_chain)
            return call_text(syntax, "search", {"query": query})
        action = expert_action(task, state["hop"], state["obs"], syntax=syntax, rng=rng,
                               early_answer_prob=MISTAKES["early_answer_prob"],
                               skip_search_prob=MISTAKES["skip_search_prob"])
        state["hop"] += 1
        state["expert_last"] = True
        if state["hop"] <= len(task.metadata["chain"]):
            state["query"] = task.metadata["chain"][state["hop"] - 1]["query"]
        return action

    return policy


def record(env, task, policy, ids: WordIds, *, traj_id: str, group: str, seed: int) -> Trajectory:
    """One episode recorded as a rollout records it (token ids included)."""
    obs, info = env.reset(seed=seed, options={"task": task})
    traj = Trajectory(id=traj_id, group=group, task=task.to_dict(),
                      prompt_ids=ids(info["system_prompt"] + obs), env_id=ENV_ID,
                      env_kwargs=dict(ENV_KWARGS), seed=seed)
    anchor, turn, done = info["anchor"], 0, False
    while not done:
        action = policy(obs, turn)
        obs, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        traj.add_turn(action=action, action_ids=ids(action), observation=obs,
                      observation_ids=[] if done else ids(obs), reward=reward, anchor=anchor,
                      info=info)
        anchor, turn = info["anchor"], turn + 1
    traj.finish(terminated=terminated, truncated=truncated)
    return traj


def build_file(path: Path, groups: int, size: int, seed: int) -> tuple[float, int]:
    from creditgym.envs.search_env import SearchEnv
    from creditgym.replay.io import TrajectoryWriter, run_metadata

    start = time.perf_counter()
    env = SearchEnv(**ENV_KWARGS)
    ids = WordIds()
    tasks = env.tasks
    off_chain = [t.metadata["chain"][0]["query"] for t in tasks]
    rng = random.Random(seed)
    turns = 0
    with TrajectoryWriter(path, run_metadata(env_id=ENV_ID, env_kwargs=ENV_KWARGS)) as w:
        for g in range(groups):
            task = tasks[rng.randrange(len(tasks))]
            for m in range(size):
                member_rng = random.Random(seed * 1_000_003 + g * size + m)
                policy = make_policy(task, member_rng, off_chain, env.config.syntax)
                traj = record(env, task, policy, ids, traj_id=f"g{g:04d}/{m}",
                              group=f"g{g:04d}", seed=seed + g)
                turns += traj.n_turns
                w.write(traj)
    env.close()
    return time.perf_counter() - start, turns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=400)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="keep the trajectory file here (default: a "
                        "temporary folder, removed afterwards)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.out or Path(tmp) / "world.jsonl"
        if path.exists():
            sys.exit(f"{path} exists; choose another --out")
        built, turns = build_file(path, args.groups, args.group_size, args.seed)
        n = args.groups * args.group_size
        size_mb = path.stat().st_size / 1e6
        print(f"built {path.name}: {n} trajectories, {turns} turns, {size_mb:.1f} MB "
              f"in {built:.1f} s")

        start = time.perf_counter()
        cmd = [sys.executable, "-m", "creditgym.cli", "credit-bench", str(path),
               "--json", str(Path(tmp) / "bench.json")]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        print(done.stdout)
        if done.returncode:
            sys.exit(f"credit-bench failed ({done.returncode}): {done.stderr}")
        inprocess(path, wall)


def inprocess(path: Path, wall: float) -> None:
    """The phases of the command, timed in this process, as one table."""
    from rich.console import Console
    from rich.table import Table

    from creditgym.bench.cli import load_groups
    from creditgym.bench.credit_bench import bench_credit
    from creditgym.bench.labels import turn_labels

    phases = []
    t = time.perf_counter()
    groups = load_groups([path])
    trajs = [x for g in groups for x in g]
    phases.append(("read and group the file", time.perf_counter() - t))
    t = time.perf_counter()
    labels = turn_labels(trajs)
    phases.append(("labels (SearchEnv.turn_labels)", time.perf_counter() - t))
    t = time.perf_counter()
    rows = bench_credit(groups, labels)
    phases.append(("all estimators and metrics", time.perf_counter() - t))
    turns = sum(x.n_turns for x in trajs)
    table = Table(title=f"credit-bench timing: {len(trajs)} trajectories, {turns} turns")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_row("`creditgym credit-bench FILE --json OUT` (fresh process)", f"{wall:.2f}")
    for name, seconds in phases:
        table.add_row(f"  in-process: {name}", f"{seconds:.2f}")
    for r in rows:
        cost = "skipped" if r.skipped else f"{r.ms_per_1k_turns * turns / 1e6:.3f}"
        table.add_row(f"    estimate(): {r.estimator}", cost)
    Console().print(table)
    print(f"goal: under 60 s -> {'met' if wall < 60 else 'MISSED'} ({wall:.1f} s)")


if __name__ == "__main__":
    main()
