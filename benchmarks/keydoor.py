"""KeyDoor numbers: shortest-solution lengths, the expert's and a random walker's success.

Usage: ``python benchmarks/keydoor.py`` (200 tasks, seed 0). It prints numbers; it asserts nothing.
"""
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from creditgym.envs.demonstration import play  # noqa: E402
from creditgym.envs.examples.keydoor import MOVES, KeyDoorEnv  # noqa: E402

env = KeyDoorEnv(num_tasks=200, seed=0)
lengths = [t.metadata["shortest"] for t in env.tasks]
print("shortest solution (actions incl. answer): min", min(lengths), "median",
      statistics.median(lengths), "max", max(lengths))
ok = sum(play(d)[1][-1] == 1.0 for d in KeyDoorEnv.demonstrations({}, count=200, seed=0, options={}))
print("expert success", ok / 200)
ok = sum(play(d)[1][-1] == 1.0 for d in KeyDoorEnv.demonstrations({}, count=200, seed=0, options={"mistake_prob": 0.3}))
print("expert with mistake_prob=0.3 success", ok / 200)
rng = random.Random(0)
actions = [f"<move>{d}</move>" for d in MOVES] + ["<pick_up></pick_up>", "<open_door></open_door>"]
wins = 0
for i, task in enumerate(env.tasks):
    obs, info = env.reset(seed=i, options={"task": task})
    done = False
    while not done:
        if "A note reads:" in obs:  # a random walker that answers once it stands in the vault
            act = f"<answer>{task.golden_answers[0]}</answer>"
        else:
            act = rng.choice(actions)
        obs, r, term, trunc, info = env.step(act)
        done = term or trunc
    wins += r == 1.0
print("random walk (answers when in the vault) success", wins / 200)
