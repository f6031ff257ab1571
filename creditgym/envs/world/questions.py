"""Multi-hop questions: random walks over functional relations, phrased from templates.

A question of ``h`` hops starts at an entity ``e0`` and follows relations ``r1 .. rh``:
``e1 = r1(e0)``, ..., the answer is ``rh(e_{h-1})`` (an entity's name or a year). The text nests a
noun phrase per bridge hop inside a final question, e.g. for work -> author -> born_in:
``In which city was the author of The Silent Kelmor born?``. Only ``e0`` is named; the bridge
entities and the answer never appear in the question (walks that would leak one are redrawn, as
are walks that revisit an entity).

Each question carries its proof: ``metadata["chain"]`` lists, per hop, the document to read
(``docid``), the title to search for (``query``, the name of ``e_{i-1}``), the ``relation`` and
the string the hop yields (``answer``, which is the next hop's query, or the final answer).
Every ``answer`` appears verbatim in that hop's document.

Splits: an entity starts questions of one split only (``WorldConfig.test_fraction`` of the
documents are test starts), so train and test share no question and no first-hop entity. Each
split draws from its own random stream, so asking for one split never changes the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from creditgym.envs.task import Task
from creditgym.envs.world.config import WorldConfig
from creditgym.envs.world.entities import (
    CITY,
    COUNTRY,
    KINDS,
    LANDMARK,
    ORG,
    PERSON,
    WORK,
    EntityGraph,
)
from creditgym.errors import ConfigError

YEAR = -1
"""Object kind of relations whose value is a year."""

_STREAMS = {"train": 5, "test": 6}
SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class Relation:
    """A functional relation and how to ask about it."""

    name: str
    """Identifier stored in the chain (``born_in``, ``founder``, ...)."""
    subject: int
    """Kind of the subject entity."""
    obj: int
    """Kind of the value, or ``YEAR``."""
    value: Callable[[EntityGraph, int], int]
    """The value for subject index ``i``: an entity index or a year; negative when absent."""
    questions: tuple[str, ...]
    """Final-hop question templates over ``{x}``, a name or a nested noun phrase."""
    phrases: tuple[str, ...] = ()
    """Noun phrases for the value when it is a bridge (entity-valued relations only). Each ends
    with ``{x}`` (``the founder of {x}``), so nested phrases branch to the right and read in
    order: ``the birthplace of the founder of Kelmor Guild``."""


RELATIONS: tuple[Relation, ...] = (
    # person
    Relation(
        "born_in",
        PERSON,
        CITY,
        lambda g, i: g.person_city[i],
        ("In which city was {x} born?", "Where was {x} born?"),
        ("the birthplace of {x}", "the city of birth of {x}"),
    ),
    Relation(
        "birth_year",
        PERSON,
        YEAR,
        lambda g, i: g.person_year[i],
        ("In which year was {x} born?", "When was {x} born?"),
    ),
    Relation(
        "works_for",
        PERSON,
        ORG,
        lambda g, i: g.person_employer[i],
        ("Which organisation did {x} work for?", "For which organisation did {x} work?"),
        ("the employer of {x}", "the organisation that employed {x}"),
    ),
    Relation(
        "founded",
        PERSON,
        ORG,
        lambda g, i: g.person_founded[i],
        ("Which organisation did {x} found?", "What organisation was founded by {x}?"),
        ("the organisation founded by {x}", "the organisation that was founded by {x}"),
    ),
    Relation(
        "wrote",
        PERSON,
        WORK,
        lambda g, i: g.person_wrote[i],
        ("Which work did {x} write?", "What is the title of the work written by {x}?"),
        ("the work written by {x}", "the work that was written by {x}"),
    ),
    # city
    Relation(
        "located_in",
        CITY,
        COUNTRY,
        lambda g, i: g.city_country[i],
        ("In which country is {x} located?", "In which country does {x} lie?"),
        ("the country of {x}", "the country that contains {x}"),
    ),
    Relation(
        "city_founded",
        CITY,
        YEAR,
        lambda g, i: g.city_year[i],
        ("In which year was {x} founded?", "When was {x} founded?"),
    ),
    # country
    Relation(
        "capital",
        COUNTRY,
        CITY,
        lambda g, i: g.country_capital[i],
        ("What is the capital of {x}?", "Which city is the capital of {x}?"),
        ("the capital of {x}", "the capital city of {x}"),
    ),
    Relation(
        "established",
        COUNTRY,
        YEAR,
        lambda g, i: g.country_year[i],
        ("In which year was {x} established?", "When was {x} established as a state?"),
    ),
    # organisation
    Relation(
        "founder",
        ORG,
        PERSON,
        lambda g, i: g.org_founder[i],
        ("Who founded {x}?", "Who was the founder of {x}?"),
        ("the founder of {x}", "the person who founded {x}"),
    ),
    Relation(
        "headquarters",
        ORG,
        CITY,
        lambda g, i: g.org_city[i],
        ("In which city is {x} headquartered?", "Where is {x} headquartered?"),
        ("the home city of {x}", "the headquarters city of {x}"),
    ),
    Relation(
        "org_founded",
        ORG,
        YEAR,
        lambda g, i: g.org_year[i],
        ("In which year was {x} founded?", "When was {x} established?"),
    ),
    # work
    Relation(
        "author",
        WORK,
        PERSON,
        lambda g, i: g.work_author[i],
        ("Who wrote {x}?", "Who is the author of {x}?"),
        ("the author of {x}", "the person who wrote {x}"),
    ),
    Relation(
        "published",
        WORK,
        YEAR,
        lambda g, i: g.work_year[i],
        ("In which year was {x} published?", "When was {x} first published?"),
    ),
    Relation(
        "set_in",
        WORK,
        CITY,
        lambda g, i: g.work_city[i],
        ("In which city is {x} set?", "Where does {x} take place?"),
        ("the setting of {x}", "the city that is the setting of {x}"),
    ),
    # landmark
    Relation(
        "location",
        LANDMARK,
        CITY,
        lambda g, i: g.landmark_city[i],
        ("In which city is {x} located?", "Where does {x} stand?"),
        ("the home city of {x}", "the city that is home to {x}"),
    ),
    Relation(
        "architect",
        LANDMARK,
        PERSON,
        lambda g, i: g.landmark_architect[i],
        ("Who designed {x}?", "Who was the architect of {x}?"),
        ("the architect of {x}", "the person who designed {x}"),
    ),
    Relation(
        "completed",
        LANDMARK,
        YEAR,
        lambda g, i: g.landmark_year[i],
        ("In which year was {x} completed?", "When was {x} completed?"),
    ),
)
"""Every relation a question can follow."""

BY_KIND: tuple[tuple[Relation, ...], ...] = tuple(
    tuple(r for r in RELATIONS if r.subject == k) for k in range(len(KINDS))
)

MAX_FAILURES_IN_A_ROW = 5000
"""Draws in a row that give no new question before the world counts as exhausted."""
YEAR_WEIGHT = 0.5
"""Relative weight of a year-valued relation as the final hop (entity answers are weight 1), so
that year questions do not dominate (every kind has a year fact)."""


class WorldTooSmallError(ConfigError):
    """Not enough distinct questions can be drawn from the world for the configured counts."""


def make_questions(g: EntityGraph, config: WorldConfig, split: str) -> list[Task]:
    """The questions of one split (deterministic in ``config.seed`` and ``split``)."""
    n_wanted = config.num_train_questions if split == "train" else config.num_test_questions
    starts = np.flatnonzero(g.doc_is_test == (split == "test"))
    rng = np.random.default_rng([config.seed, _STREAMS[split]])
    tasks: list[Task] = []
    seen: set[tuple] = set()
    failures = 0  # attempts in a row that gave no new question
    while len(tasks) < n_wanted:
        hops = 1 + len(tasks) % config.max_hops
        if failures > MAX_FAILURES_IN_A_ROW:
            raise WorldTooSmallError(
                f"could only draw {len(tasks)} distinct {split} questions from a world of "
                f"{g.num_documents} documents; lower num_{split}_questions or raise num_documents"
            )
        d = int(starts[rng.integers(len(starts))])
        task = _draw(g, rng, d, hops, split, config.seed, len(tasks), seen)
        if task is None:
            failures += 1
        else:
            tasks.append(task)
            failures = 0
    return tasks


def _draw(g: EntityGraph, rng, d: int, hops: int, split: str, seed: int, n: int, seen: set):
    kind, i = int(g.doc_kind[d]), int(g.doc_index[d])
    visited = {(kind, i)}
    chain, rels = [], []
    for h in range(hops):
        final = h == hops - 1
        options = []
        for r in BY_KIND[kind]:
            if r.obj == YEAR and not final:
                continue
            v = int(r.value(g, i))
            if v < 0 or (r.obj != YEAR and (r.obj, v) in visited):
                continue
            options.append((r, v))
        if not options:
            return None
        if final:
            w = np.array([YEAR_WEIGHT if r.obj == YEAR else 1.0 for r, _ in options])
            r, v = options[rng.choice(len(options), p=w / w.sum())]
        else:
            r, v = options[rng.integers(len(options))]
        subject_name = g.name(kind, i)
        answer = str(v) if r.obj == YEAR else g.name(r.obj, v)
        chain.append(
            {
                "docid": str(g.docid(kind, i)),
                "query": subject_name,
                "relation": r.name,
                "answer": answer,
            }
        )
        rels.append(r)
        if r.obj != YEAR:
            visited.add((r.obj, v))
            kind, i = r.obj, v
    key = (d, tuple(r.name for r in rels))
    if key in seen:
        return None

    x = chain[0]["query"]
    for r in rels[:-1]:
        x = r.phrases[rng.integers(len(r.phrases))].format(x=x)
    templates = rels[-1].questions
    question = templates[rng.integers(len(templates))].format(x=x)

    # Neither the bridges nor the answer may be readable from the question.
    low = question.lower()
    if any(hop["answer"].lower() in low for hop in chain):
        return None
    seen.add(key)
    last = rels[-1]
    golden = (chain[-1]["answer"],) if last.obj == YEAR else g.aliases(kind, i)
    return Task(
        id=f"world-s{seed}-{split}-{n:05d}",
        question=question,
        golden_answers=golden,
        data_source="world",
        metadata={
            "hops": hops,
            "split": split,
            "chain": chain,
            "answer_kind": "year" if last.obj == YEAR else KINDS[last.obj],
            "world_seed": seed,
        },
    )
