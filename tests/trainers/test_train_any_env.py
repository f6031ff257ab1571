"""`creditgym train` trains any environment: a user's module, held-out tasks by id, files as demos.

The user's module lives in tmp_path and uses nothing of creditgym but ``ToolEnv`` and ``Task``
(its tools are plain functions); ``creditgym train`` runs with the module's folder on the import
path (what ``PYTHONPATH`` does for a user), with a wrapper from the same module that marks
every observation, and a warm start read from a trajectory file the test records (which names
held-out tasks too: the trainer must leave those out).
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from creditgym.cli import main
from creditgym.replay import read_trajectories, write_trajectories
from creditgym.trainers.heldout import heldout_ids
from creditgym.trajectory import Trajectory

USER_MODULE = '''
"""A user's environment: reverse a word with a tool, then answer."""
import gymnasium

from creditgym.envs import Task, ToolEnv

WORDS = ["apple", "river", "stone", "cloud", "maple", "tiger", "lemon", "piano", "ocean",
         "zebra", "candle", "garden"]


def reverse(word: str) -> str:
    """Reverse a word.

    Args:
        word: The word to reverse, e.g. "apple".
    """
    return word[::-1]


class ReverseEnv(ToolEnv):
    def __init__(self, **kwargs):
        tasks = [Task(f"rev-{w}", f"Reverse {w}", [w[::-1]]) for w in WORDS]
        super().__init__([reverse], tasks=tasks, **kwargs)


class Marked(gymnasium.Wrapper):
    """Rewrites every observation the policy sees."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return "[marked] " + obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return "[marked] " + obs, reward, terminated, truncated, info
'''


def _record_expert_file(module_dir: Path, path: Path) -> list[str]:
    """Expert transcripts of every task (held-out ones too) as a trajectory JSONL file, the way
    a user's script would write them; returns the task ids."""
    sys.path.insert(0, str(module_dir))
    try:
        import their_module
    finally:
        sys.path.remove(str(module_dir))
    env = their_module.ReverseEnv(config={"max_turns": 3})
    trajs = []
    for task in env.tasks:
        obs, info = env.reset(seed=0, options={"task": task})
        traj = Trajectory(id=f"file/{task.id}", group=task.id, task=task.to_dict(), prompt_ids=[],
                          prompt_messages=[{"role": "user", "content": obs}])
        anchor = info["anchor"]
        for action in (f"<reverse>{task.question.split()[-1]}</reverse>",
                       f"<answer>{task.golden_answers[0]}</answer>"):
            obs, reward, terminated, truncated, info = env.step(action)
            traj.add_turn(action=action, action_ids=[], observation=obs, observation_ids=[],
                          reward=reward, anchor=anchor, info=info)
            anchor = info["anchor"]
        traj.finish(terminated=terminated, truncated=truncated)
        assert traj.success
        trajs.append(traj)
    write_trajectories(path, trajs)
    env.close()
    return [t.id for t in env.tasks]


def test_user_module_env_trains_from_the_command_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "their_module.py").write_text(textwrap.dedent(USER_MODULE))
    demo_file = tmp_path / "expert.jsonl"
    task_ids = _record_expert_file(tmp_path, demo_file)
    run = tmp_path / "run"
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "run_dir": str(run), "threads": 1, "system_prompt": False,
        "env": {"kwargs": {"config": {"max_turns": 3}}, "wrappers": ["their_module:Marked"]},
        "model": {"tiny_layers": 1, "tiny_hidden": 32, "tiny_vocab": 300},
        "sft": {"demonstrations": 0, "demonstration_files": [str(demo_file)], "steps": 3,
                "batch_size": 4},
        "rl": {"iterations": 1, "tasks_per_iteration": 2, "group_size": 2, "max_new_tokens": 8,
               "max_context_tokens": 256},
        "credit": "grpo", "policy": {"micro_batch_tokens": 4096},
        "eval": {"episodes": 3, "heldout_fraction": 0.25}}))
    # their module on the import path, as PYTHONPATH puts it there (in this process: a fresh
    # interpreter would spend its time importing torch)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "their_module", raising=False)
    assert main(["train", "--config", str(config), "--set", "env.id=their_module:ReverseEnv"]) == 0
    sys.modules.pop("their_module", None)
    assert "held-out evaluation (their_module:ReverseEnv" in capsys.readouterr().out
    # 3 of 12 tasks held out by id, recorded with the run, and the same every time
    heldout = json.loads((run / "heldout.json").read_text())["task_ids"]
    assert sorted(heldout) == sorted(heldout_ids(task_ids, 0.25)) and len(heldout) == 3
    assert (run / "config.yaml").read_text().startswith("# held out: 3 of 12 tasks")
    # the warm start imitated the file's transcripts, re-tokenised, held-out tasks left out
    demos = read_trajectories(run / "demonstrations.jsonl")
    assert len(demos) == 9 and not {t.task["id"] for t in demos} & set(heldout)
    assert all(len(t.prompt_ids) > 0 and all(t.action_ids) for t in demos)
    # RL rolled out the user's environment through the user's wrapper, on training tasks only
    trajs = read_trajectories(run / "rollouts.jsonl")
    assert len(trajs) == 4 and {t.env_id for t in trajs} == {"their_module:ReverseEnv"}
    assert not {t.task["id"] for t in trajs} & set(heldout)
    for t in trajs:
        assert t.prompt_messages[-1]["content"].startswith("[marked] ")
        assert all(o.startswith("[marked] ") for o in t.observations)
    evaluated = read_trajectories(run / "eval-after.jsonl")
    assert {t.task["id"] for t in evaluated} <= set(heldout) and len(evaluated) == 3
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert row["rollout/trajectories"] == 4 and "rollout/success" in row


def test_bad_env_id_fails_before_anything_is_made(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", "configs/calculator.yaml", "--set", f"run_dir={run}",
                 "--set", "env.id=no_such_module_xyz:Env"]) == 2
    err = capsys.readouterr().err
    assert "no_such_module_xyz:Env" in err and "creditgym/Calculator-v0" in err
    assert not run.exists()
    assert main(["train", "--config", "configs/calculator.yaml", "--set", f"run_dir={run}",
                 "--set", "env.kwargs.colour=1"]) == 2
    assert "colour" in capsys.readouterr().err and not run.exists()


def test_heldout_split_is_by_id_and_never_empty():
    ids = [f"t{i}" for i in range(100)]
    held = heldout_ids(ids, 0.2)
    assert len(held) == 20 and held == heldout_ids(list(reversed(ids)), 0.2)
    # a task keeps its side when others are added (ranks shift by at most the newcomers)
    assert len(held & heldout_ids(ids + ["extra"], 0.2)) >= 19
    assert len(heldout_ids(["a", "b"], 0.01)) == 1 and len(heldout_ids(["a", "b"], 0.99)) == 1
    with pytest.raises(Exception, match="unique id"):
        heldout_ids(["a", "a", "b"], 0.5)


TINY = ["--set", "threads=1", "--set", "model.tiny_layers=1", "--set", "model.tiny_hidden=32",
        "--set", "model.tiny_vocab=300", "--set", "sft.demonstrations=12", "--set", "sft.steps=2",
        "--set", "sft.batch_size=4", "--set", "rl.iterations=1", "--set", "rl.tasks_per_iteration=2",
        "--set", "rl.group_size=2", "--set", "rl.max_new_tokens=8", "--set", "eval.episodes=2",
        "--set", "policy.micro_batch_tokens=4096"]


@pytest.mark.parametrize("name, extra", [
    ("calculator.yaml", []),
    # long episodes: the context budget ends a tiny model's wandering early
    ("keydoor.yaml", ["--set", "env.kwargs.num_tasks=20", "--set", "rl.max_context_tokens=400",
                      "--set", "sft.lm_steps=2"]),
])
def test_shipped_example_configs_train_end_to_end(tmp_path, name, extra):
    run = tmp_path / "run"
    assert main(["train", "--config", f"configs/{name}", "--set", f"run_dir={run}", *TINY,
                 *extra]) == 0
    heldout = set(json.loads((run / "heldout.json").read_text())["task_ids"])
    demos = read_trajectories(run / "demonstrations.jsonl")
    # the environment's own demonstrator, on training tasks only, and it solves them
    assert demos and not {t.task["id"] for t in demos} & heldout
    assert all(t.success for t in demos if not t.id.startswith("demo/act/"))
    assert len(rows := (run / "metrics.jsonl").read_text().splitlines()) == 1
    assert "rollout/success" in json.loads(rows[0])
    assert {"before", "after"} <= set(json.loads((run / "evals.json").read_text()))


def test_bad_wrapper_fails_before_the_run_folder_is_made(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", "configs/calculator.yaml", "--set", f"run_dir={run}",
                 "--set", 'env.wrappers=["no_such_module_xyz:Wrapper"]']) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err and not run.exists()
