"""Ground-truth turn labels of the built-in world's episodes, for the credit bench.

A question's ``metadata["chain"]`` names, per hop, the document that proves it (its title is the
hop's ``query``). Reading a recorded episode turn by turn:

- ``"useful"``: a search whose returned passages (``Doc i(Title: T) ...`` in the turn's
  observation) include a chain document that no earlier turn returned, or the final answer of a
  successful episode;
- ``"harmful"``: the turn that ended an unsuccessful episode (a wrong answer, or the turn limit);
- ``"wasted"``: anything else: a repeated or off-chain search, an invalid action, another tool.

Only the record is read (observations, valid flags, tool calls, outcome metrics); nothing is
searched again, so the labels describe what the agent actually saw.
"""

from __future__ import annotations

from typing import Any

from creditgym.envs.contract import ended_unsuccessfully


def chain_titles(task: dict[str, Any]) -> list[str] | None:
    """Titles of the chain documents of a task dict, or None when it has no chain (Search-R1
    questions) or a chain without titles."""
    chain = (task.get("metadata") or {}).get("chain")
    if not isinstance(chain, list) or not chain:
        return None
    titles = [hop.get("query") for hop in chain if isinstance(hop, dict)]
    if len(titles) != len(chain) or not all(isinstance(t, str) and t for t in titles):
        return None
    return titles


def _searched(trajectory: Any, turn: int) -> bool:
    """The turn ran a search that succeeded (by its tool calls where recorded, else its flag)."""
    if trajectory.tool_calls:
        return any(c.get("name") == "search" and c.get("ok") for c in trajectory.tool_calls[turn])
    return bool(trajectory.valid[turn])


def world_turn_labels(trajectory: Any) -> list[str] | None:
    """One label per turn of a built-in-world record (see the module docstring); None when the
    task has no chain or the record holds no observation texts."""
    titles = chain_titles(trajectory.task)
    n = trajectory.n_turns
    if titles is None or n == 0 or len(trajectory.observations) != n:
        return None
    labels = ["wasted"] * n
    seen: set[str] = set()
    for t in range(n - 1):  # the last turn is judged by the outcome
        if trajectory.valid[t] and _searched(trajectory, t):
            obs = trajectory.observations[t]
            found = {title for title in titles if f"(Title: {title})" in obs}
            if found - seen:
                labels[t] = "useful"
            seen |= found
    labels[-1] = "harmful" if ended_unsuccessfully(trajectory) else "useful"
    return labels
