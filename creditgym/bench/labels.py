"""Ground-truth turn labels of recorded trajectories, from the environment each record names.

Each record's ``env_id`` is resolved to its environment class, whose ``turn_labels(trajectory)``
(``creditgym.envs.contract``) labels the turns from the record alone; no environment is built.
A trajectory file is data, not code: the id must pass ``replay.trust.EnvPolicy.check_env_id``
(registered by creditgym, or by a module the user allows with ``--allow-module``) before it is
resolved, exactly as ``replay verify``/``rescore`` check it, so a file cannot make the bench
import a module it names. ``env_kwargs`` are never read (nothing is opened).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from creditgym.envs.contract import TURN_LABELS
from creditgym.errors import ConfigError
from creditgym.replay.trust import EnvPolicy
from creditgym.trajectory import Trajectory


def label_function(env_id: str, policy: EnvPolicy, where: str = "") -> Callable[[Any], Any] | None:
    """The ``turn_labels`` of ``env_id``'s class, or None (no id, a factory function, or a class
    without the hook); raises ``UntrustedFileError`` when ``policy`` refuses the id."""
    if not env_id:
        return None
    from creditgym.envs.factory import resolve_env

    entry, kind = resolve_env(policy.check_env_id(env_id, where))
    return getattr(entry, "turn_labels", None) if kind == "class" else None


def turn_labels(trajectories: Sequence[Trajectory], policy: EnvPolicy | None = None, *,
                progress: Callable[[Iterable[Trajectory]], Iterable[Trajectory]] | None = None
                ) -> list[list[str] | None]:
    """Per trajectory its environment's labels (one of ``TURN_LABELS`` per turn) or None.
    A label function that answers anything else is a ``ConfigError`` naming the environment."""
    policy = policy or EnvPolicy()
    functions: dict[str, Callable[[Any], Any] | None] = {}
    out: list[list[str] | None] = []
    for t in progress(trajectories) if progress else trajectories:
        if t.env_id not in functions:
            functions[t.env_id] = label_function(t.env_id, policy, f"trajectory {t.id!r}")
        fn = functions[t.env_id]
        labels = fn(t) if fn is not None else None
        if labels is not None:
            labels = list(labels)
            if len(labels) != t.n_turns or any(x not in TURN_LABELS for x in labels):
                raise ConfigError(
                    f"{t.env_id}: turn_labels of trajectory {t.id!r} returned {labels!r}; it "
                    f"must return one of {', '.join(TURN_LABELS)} per turn ({t.n_turns} turns) "
                    "or None")
        out.append(labels)
    return out
