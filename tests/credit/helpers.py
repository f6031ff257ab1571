"""Shared helpers for the credit tests: a small trajectory factory."""

from __future__ import annotations

from creditgym.trajectory import Trajectory


def make_traj(tid, group, rewards, *, anchors=None, valid=None, prompt=(1, 2), metrics=None,
              actions=None, observations=None, task=None):
    n = len(rewards)
    actions = actions if actions is not None else [[10 + t, 20 + t] for t in range(n)]
    observations = observations if observations is not None else [[30 + t] for t in range(n)]
    return Trajectory(
        id=tid, group=group, task=task or {"id": group, "question": "q", "golden_answers": ["a"]},
        prompt_ids=list(prompt), action_ids=actions,
        action_logprobs=[[-0.5] * len(a) for a in actions], observation_ids=observations,
        rewards=list(rewards), anchors=anchors if anchors is not None else [f"s{t}" for t in range(n)],
        valid=valid if valid is not None else [True] * n, metrics=metrics or {},
    )
