"""IGPO probes: how likely is the gold answer if the agent answered right now, before each turn?

For turn t of a trajectory the probe is the context the policy saw before generating turn t
(``prompt_ids`` plus all earlier actions and observations, i.e. with the generation prompt),
then ``fmt.context_suffix`` (the official code opens ``<think>``), then teacher-forced
``fmt.answer_prefix + gold + fmt.answer_suffix + fmt.end_of_turn``. ``l_t`` is the mean
log-probability of the gold answer tokens only. Each text piece is encoded on its own, so the gold
tokens are known exactly. With ``aliases="best"`` every gold alias is probed and the best mean is
kept (the official code uses the first alias).

The scorer is duck-typed (any backend's ``score``): ``score(prefixes, continuations)`` returns the
per-token log-probs of each continuation given its prefix. Identical probes (turn 0 of a group
shares its prompt) are scored once. Nothing here imports a model library.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from creditgym.credit._arrays import CreditInputError

Encode = Callable[[str], list[int]]
Score = Callable[[list[list[int]], list[list[int]]], list[list[float]]]


@dataclass(frozen=True)
class ProbeFormat:
    """Text around the teacher-forced gold answer (defaults: the official IGPO code)."""

    context_suffix: str = "<think>"
    """Appended to the context before the forced answer."""
    answer_prefix: str = "\nNow there's enough information to answer\n</think>\n<answer>\n"
    """Forced text before the gold answer (its tokens are not scored)."""
    answer_suffix: str = "\n</answer>"
    """Forced text after the gold answer (not scored)."""
    end_of_turn: str = ""
    """End-of-turn text of the chat template (e.g. ``<|im_end|>``), not scored."""


def golds_of(traj: Any) -> list[str]:
    """Gold answers of a trajectory's task (``task["golden_answers"]``)."""
    golds = list(traj.task.get("golden_answers") or [])
    if not golds:
        raise CreditInputError(f"trajectory {traj.id!r}: task has no golden_answers to probe")
    return [str(g) for g in golds]


def probe_logprobs(
    trajectories: Sequence[Any],
    encode: Encode,
    score: Score,
    *,
    fmt: ProbeFormat = ProbeFormat(),
    aliases: str = "first",
    batch_size: int = 256,
) -> list[np.ndarray]:
    """``l_t`` for t = 0..T-1 of each trajectory (one array of ``n_turns`` per trajectory)."""
    if aliases not in ("first", "best"):
        raise CreditInputError(f"aliases: {aliases!r} is not 'first' or 'best'")
    if not isinstance(batch_size, int) or batch_size < 1:  # 0 or less would score nothing
        raise CreditInputError(f"batch_size: {batch_size!r} probes per call; give 1 or more")
    ctx_suffix = list(encode(fmt.context_suffix)) if fmt.context_suffix else []
    pre = list(encode(fmt.answer_prefix)) if fmt.answer_prefix else []
    post = list(encode(fmt.answer_suffix)) if fmt.answer_suffix else []
    post += list(encode(fmt.end_of_turn)) if fmt.end_of_turn else []

    index: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    jobs: list[tuple[list[int], list[int], int]] = []  # prefix, continuation, gold length
    layout: list[list[list[int]]] = []  # per trajectory, per turn: job ids of the aliases
    for traj in trajectories:
        golds = golds_of(traj)[: 1 if aliases == "first" else None]
        gold_ids = [list(encode(g)) for g in golds]
        per_turn = []
        context = list(traj.prompt_ids)
        for t in range(traj.n_turns):
            prefix = context + ctx_suffix
            ids = []
            for gi in gold_ids:
                if not gi:
                    raise CreditInputError(f"trajectory {traj.id!r}: a gold answer encodes to no tokens")
                cont = pre + gi + post
                key = (tuple(prefix), tuple(cont))
                if key not in index:
                    index[key] = len(jobs)
                    jobs.append((prefix, cont, len(gi)))
                ids.append(index[key])
            per_turn.append(ids)
            context += list(traj.action_ids[t]) + list(traj.observation_ids[t])
        layout.append(per_turn)

    means = np.empty(len(jobs))
    start = len(pre)
    for b in range(0, len(jobs), batch_size):
        chunk = jobs[b : b + batch_size]
        got = score([j[0] for j in chunk], [j[1] for j in chunk])
        if len(got) != len(chunk):
            raise CreditInputError(f"score returned {len(got)} results for {len(chunk)} probes")
        for k, (job, lp) in enumerate(zip(chunk, got)):
            lp = np.asarray(lp, dtype=np.float64)
            if lp.size != len(job[1]):
                raise CreditInputError(
                    f"score returned {lp.size} log-probs for a continuation of {len(job[1])} tokens"
                )
            means[b + k] = lp[start : start + job[2]].mean()
    return [np.array([means[ids].max() for ids in per_turn]) for per_turn in layout]
