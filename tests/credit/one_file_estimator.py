"""A user's estimator in one file of its own: config, math and registration, no creditgym edits.

``turn_bonus``: every turn's advantage is the trainer-supplied ``inputs["bonus"]`` of that turn
minus ``per_turn`` times the trajectory's number of turns (a toy length penalty). Importing this
module registers it; ``creditgym.credit.estimate`` and ``make_config`` then know the name.
"""

from __future__ import annotations

from dataclasses import dataclass

from creditgym.credit import register_estimator
from creditgym.credit.adapter import TurnBatch, per_turn_input, turns_to_tokens


@dataclass
class TurnBonusConfig:
    per_turn: float = 0.1
    """Penalty per turn of the trajectory, subtracted from every turn's bonus."""


@register_estimator("turn_bonus", TurnBonusConfig, needs=("bonus",))
def turn_bonus(batch: TurnBatch, config: TurnBonusConfig, inputs):
    bonus = per_turn_input("bonus", inputs, batch, "turn_bonus")
    adv = bonus - config.per_turn * batch.n_turns[batch.traj]
    return turns_to_tokens(batch, adv), {"mean_bonus": float(bonus.mean())}
