"""A scripted expert for the built-in world: follow the question's chain, reading each bridge
entity off the passages the search actually returned.

It searches hop ``t``'s entity only after the previous search showed that name, and answers only
with a string the last search showed, so it reaches the gold answer exactly when retrieval
surfaced every document of the chain. That makes it both the upper bound of what an agent can do
through a given backend and (later) the source of demonstrations for a warm start.
"""

from __future__ import annotations

import random

from creditgym.envs.task import Task

UNKNOWN = "unknown"


def expert_action(
    task: Task, turn: int, observation: str, *, syntax: str = "xml",
    early_answer_prob: float = 0.0, skip_search_prob: float = 0.0,
    rng: random.Random | None = None,
) -> str:
    """The expert's action at ``turn`` (0-based), given the observation it has just seen.

    ``early_answer_prob`` makes it imperfect on purpose, for warm-start demonstrations: after each
    search that is not the last hop, with this probability it answers with the entity it has just
    found (a bridge entity, so the answer is wrong) instead of searching on. A policy imitating it
    can call tools but stops too early on multi-hop questions, which is what RL has to fix.
    ``skip_search_prob`` is the chance that at turn 0 it gives up without searching ("unknown").
    """
    chain = task.metadata["chain"]
    if turn == 0 and skip_search_prob > 0 and (rng or random).random() < skip_search_prob:
        return _call(syntax, "answer", UNKNOWN)
    if turn > 0 and chain[turn - 1]["answer"] not in observation:
        return _call(syntax, "answer", UNKNOWN)  # retrieval missed the hop's document
    if turn < len(chain):
        if 0 < turn and early_answer_prob > 0 and (rng or random).random() < early_answer_prob:
            return _call(syntax, "answer", chain[turn - 1]["answer"])
        return _call(syntax, "search", chain[turn]["query"])
    return _call(syntax, "answer", chain[-1]["answer"])


def _call(syntax: str, tool: str, text: str) -> str:
    if syntax == "xml":
        # Spaced like Search-R1's "<search> query </search>": the name's tokens then carry the
        # leading space they have in questions and passages, so a policy copies the same ids.
        return f"<{tool}> {text} </{tool}>"
    import json

    arg = "query" if tool == "search" else "answer"
    return "<tool_call>" + json.dumps({"name": tool, "arguments": {arg: text}}) + "</tool_call>"
