"""The task record every environment is reset with: a question, its gold answers, and provenance.

Built-in world questions, Search-R1 parquet/JSONL rows and user data all become ``Task`` objects,
so environments, rollouts and trajectory records handle one type. ``metadata`` carries what a
source knows beyond the question (hops, the chain of documents that proves the answer, ...) and
must stay JSON-serialisable because trajectory records store the task.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    """One question to solve."""

    id: str
    """Stable identifier, unique within its source (e.g. ``world-s0-test-00042``)."""
    question: str
    """The question text shown to the agent."""
    golden_answers: tuple[str, ...]
    """Every accepted answer string (aliases included); rewards match against any of them."""
    data_source: str = "world"
    """Where the task came from (``world``, ``nq``, ``hotpotqa``, ...), as in Search-R1 data."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Source-specific, JSON-serialisable extras: hops, the proving document chain, split, ..."""

    def __post_init__(self) -> None:
        if isinstance(self.golden_answers, str):
            raise TypeError("Task.golden_answers must be a sequence of strings, not one string")
        object.__setattr__(self, "golden_answers", tuple(str(a) for a in self.golden_answers))
        if not self.golden_answers:
            raise ValueError(f"Task {self.id!r} has no golden answers; give at least one")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``golden_answers`` as a list)."""
        d = asdict(self)
        d["golden_answers"] = list(self.golden_answers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Task":
        """Inverse of :meth:`to_dict`."""
        return cls(
            id=str(d["id"]),
            question=str(d["question"]),
            golden_answers=tuple(d["golden_answers"]),
            data_source=str(d.get("data_source", "world")),
            metadata=dict(d.get("metadata") or {}),
        )
