"""``WorldConfig``: the knobs of the built-in procedural world (size, seed, questions, splits)."""

from __future__ import annotations

from dataclasses import dataclass

from creditgym.errors import ConfigError

MIN_DOCUMENTS = 100
"""Smallest world that still has a few entities of every kind."""
MAX_HOPS_LIMIT = 6
"""Longest chain a question may follow (past that the phrasing stops being readable)."""


@dataclass(frozen=True)
class WorldConfig:
    """How to generate a world. Everything is a pure function of these fields."""

    seed: int = 0
    """Seed of every random choice: names, facts, document wording, questions, splits."""
    num_documents: int = 3000
    """Total documents (one per entity, distractors included). 3k builds in well under a second;
    1,000,000 is supported (a few hundred MB of corpus, see ``benchmarks/world.py``)."""
    distractor_fraction: float = 0.1
    """Fraction of entities (all kinds but countries) that are near-duplicates of another entity
    of their kind: the name differs by one syllable and some facts are shared (same birthplace,
    same city, same year), so lexical retrieval has close competitors."""
    max_hops: int = 4
    """Longest question chain; questions have 1..max_hops hops in equal shares."""
    num_train_questions: int = 2000
    """Questions in the ``train`` split."""
    num_test_questions: int = 500
    """Questions in the ``test`` split."""
    test_fraction: float = 0.2
    """Fraction of entities reserved as first-hop entities of test questions; the two splits
    never start from the same entity, so they share no question."""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"WorldConfig.{name}={getattr(self, name)!r}: {why}")

        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "must be a non-negative integer")
        if self.num_documents < MIN_DOCUMENTS:
            raise bad("num_documents", f"must be at least {MIN_DOCUMENTS}")
        if not 0.0 <= self.distractor_fraction <= 0.5:
            raise bad("distractor_fraction", "must be in [0, 0.5]")
        if not 1 <= self.max_hops <= MAX_HOPS_LIMIT:
            raise bad("max_hops", f"must be in [1, {MAX_HOPS_LIMIT}]")
        if self.num_train_questions < 0 or self.num_test_questions < 0:
            raise ConfigError("WorldConfig: question counts must be non-negative")
        if not 0.0 < self.test_fraction < 1.0:
            raise bad("test_fraction", "must be strictly between 0 and 1")
