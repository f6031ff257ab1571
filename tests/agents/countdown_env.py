"""A scripted, deterministic gymnasium environment for rollout tests (``CountdownEnv``), with
the task it is reset with and the tool schemas it can offer."""

from __future__ import annotations

import gymnasium

from creditgym.envs.task import Task

TASK = Task(id="t0", question="Which river runs through Ostrava?", golden_answers=("Oder",))
TOOLS = [{"type": "function", "function": {
    "name": "lookup", "description": "Look a name up.",
    "parameters": {"type": "object", "properties": {"name": {"type": "string"}}}}}]


class CountdownEnv(gymnasium.Env):
    """Terminates after ``turns`` steps. The first observation carries a number drawn from the
    reset seed (a reset without the recorded seed shows in the prompt); step ``k`` rewards
    ``reward * k``; the anchor is ``state k`` unless ``anchors`` is off."""

    def __init__(self, *, turns=3, reward=0.25, anchors=True, system_prompt=True, tools=False):
        self.turns, self.reward, self.anchors = turns, reward, anchors
        self.system_prompt, self.tools = system_prompt, tools

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.turn = 0
        info = self._info()
        if self.system_prompt:
            info["system_prompt"] = "Answer in one word."
        if self.tools:
            info["tools"] = TOOLS
        code = int(self.np_random.integers(10**6))
        return f"{options['task'].question} (code {code})", info

    def step(self, action):
        self.turn += 1
        obs = f"turn {self.turn}: you wrote {len(action)} characters"
        info = {**self._info(), "metrics": {"turn": self.turn}}
        return obs, self.reward * self.turn, self.turn >= self.turns, False, info

    def _info(self):
        return {"anchor": f"state {self.turn}"} if self.anchors else {}
