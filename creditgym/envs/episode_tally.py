"""``EpisodeTally``: what a ``ToolEnv`` counts during one episode (turns, invalid actions, tool
calls, whether every action was well-formed and thought aloud) and the outcome metrics those
counts end in, reported on the episode's final step."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from creditgym.envs.rewards import format_component
from creditgym.envs.tool_env_config import ToolEnvConfig


@dataclass
class EpisodeTally:
    """Counters of the current episode; a fresh one per ``reset``."""

    turn: int = 0
    """Steps taken so far."""
    all_valid: bool = True
    """No action so far was invalid (a parse error or a failing tool call)."""
    all_think: bool = True
    """Every action so far had a think block."""
    invalid: int = 0
    """Invalid actions so far."""
    calls: Counter[str] = field(default_factory=Counter)
    """Tool name -> calls that ran."""

    def step(self, *, valid: bool, think: bool, executed: Iterable[str]) -> None:
        """Count one step: whether it was valid, had a think block, and the tools that ran."""
        self.turn += 1
        self.all_think = self.all_think and think
        self.calls.update(executed)
        if not valid:
            self.all_valid = False
            self.invalid += 1

    def outcome_metrics(self, scored: dict[str, float], *, answer: str | None,
                        tool_names: Iterable[str], config: ToolEnvConfig) -> dict[str, float]:
        """The final step's outcome metrics: ``scored`` (the environment's ``reward()``, which
        holds ``reward``) as ``reward/outcome``, the format component, and the episode's counts."""
        scored = dict(scored)
        correct = scored.get("correct", scored.get("em", 0.0)) >= 0.5
        well_formed = self.all_valid and answer is not None and (
            self.all_think or not config.reward.format_requires_think
        )
        metrics = {"reward/outcome": scored.pop("reward")}
        metrics["reward/format"] = format_component(well_formed, correct, config.reward.format)
        metrics.update(scored)
        metrics["well_formed"] = float(well_formed)
        metrics["answered"] = float(answer is not None)
        metrics["turns"] = float(self.turn)
        metrics["invalid_actions"] = float(self.invalid)
        metrics["tool_calls"] = float(sum(self.calls.values()))
        for name in tool_names:
            if name != config.answer_tool:
                metrics[f"calls/{name}"] = float(self.calls[name])
        return metrics
