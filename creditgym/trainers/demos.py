"""Demonstrations for the SFT warm start: the world's scripted expert, recorded as trajectories.

Each demonstration is an expert episode through the real environment, tokenised exactly the way a
rollout would record it: the prompt rendered once with the chat template, each action's ids
(ending at its closing tag, where generation stops), and each observation as the template delta.
So the warm-started policy sees, token for token, the layout it will later generate into.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import gymnasium

from creditgym.agents.chat import ChatRenderer
from creditgym.envs.task import Task
from creditgym.envs.world.expert import expert_action
from creditgym.trajectory import Trajectory


def record_expert_episode(
    env: gymnasium.Env, task: Task, renderer: ChatRenderer, *, seed: int, traj_id: str,
    early_answer_prob: float = 0.0, skip_search_prob: float = 0.0, rng: random.Random | None = None,
    system_prompt: bool = True,
) -> Trajectory:
    obs, info = env.reset(seed=seed, options={"task": task})
    messages = []
    if system_prompt and info.get("system_prompt"):
        messages.append({"role": "system", "content": info["system_prompt"]})
    messages.append({"role": "user", "content": obs})
    traj = Trajectory(id=traj_id, group=task.id, task=task.to_dict(), seed=seed,
                      prompt_ids=renderer.prompt_ids(messages), prompt_messages=messages)
    anchor, turn, done = info.get("anchor", obs), 0, False
    while not done:
        action = expert_action(task, turn, obs, early_answer_prob=early_answer_prob,
                               skip_search_prob=skip_search_prob, rng=rng)
        action_ids = renderer.encode(action)
        obs, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        traj.action_ids.append(action_ids)
        traj.action_logprobs.append([0.0] * len(action_ids))
        traj.observation_ids.append([] if done else renderer.observation_ids(obs, action_ids))
        traj.rewards.append(float(reward))
        traj.anchors.append(anchor)
        traj.valid.append(bool(info.get("valid", True)))
        traj.actions.append(action)
        traj.observations.append(obs)
        anchor, turn = info.get("anchor", obs), turn + 1
    traj.terminated, traj.truncated = bool(terminated), bool(truncated)
    traj.metrics = dict(info.get("metrics", {}))
    return traj


def expert_demonstrations(
    make_env: Callable[[], gymnasium.Env], tasks: Sequence[Task], renderer: ChatRenderer, *,
    count: int, early_answer_prob: float, skip_search_prob: float = 0.0, seed: int = 0,
    progress: bool = False, system_prompt: bool = True, id_prefix: str = "demo/",
) -> list[Trajectory]:
    """``count`` expert episodes over ``tasks`` (cycled, shuffled with ``seed``)."""
    rng = random.Random(seed)
    order = list(tasks)
    rng.shuffle(order)
    env = make_env()
    iterator = range(count)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="expert demonstrations", unit="episode")
    return [
        record_expert_episode(env, order[i % len(order)], renderer, seed=seed + i,
                              traj_id=f"{id_prefix}{i}", early_answer_prob=early_answer_prob,
                              skip_search_prob=skip_search_prob, rng=rng, system_prompt=system_prompt)
        for i in iterator
    ]
