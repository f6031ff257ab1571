"""The held-out tasks of an environment that has no separate test split.

``heldout_ids(task_ids, fraction)`` picks ``round(fraction * n)`` task ids (at least one, and at
least one left to train on) by the SHA-256 of each id: deterministic, independent of the task
order, the seed and the machine, and stable when tasks are added (a task's fate depends on its
own id and its rank among the others). The trainer never trains on, demonstrates or fits a
tokenizer to those tasks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from creditgym.errors import ConfigError


def heldout_ids(task_ids: Sequence[str], fraction: float, *, where: str = "env") -> set[str]:
    """The held-out subset of ``task_ids`` (see the module docstring)."""
    ids = list(dict.fromkeys(task_ids))
    if len(ids) != len(task_ids):
        raise ConfigError(f"{where}: task ids repeat, so no held-out split by id is possible; "
                          "give every task a unique id, or name a held-out environment with "
                          "eval.env_kwargs")
    if len(ids) < 2:
        raise ConfigError(f"{where}: {len(ids)} task(s); holding some out for evaluation needs at "
                          "least 2 (or name a held-out environment with eval.env_kwargs)")
    k = min(max(round(fraction * len(ids)), 1), len(ids) - 1)
    ranked = sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    return set(ranked[:k])
