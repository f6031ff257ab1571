"""Document text: one encyclopedia article per entity, written from sentence templates.

Every fact has three phrasings. A document opens with an introduction sentence and then states
its facts in a per-document shuffled order; which phrasing each fact gets and the order both come
from a 64-bit key hashed from (seed, docid), so any document can be rendered on its own, in any
order, and always reads the same. The vocabulary is small and regular on purpose (a tiny model
must learn to copy answer spans from it), while the varied phrasings, the shuffled order and
the sentences that mention other entities (a city lists people born there, a country lists its
other cities) keep lexical retrieval from being trivial.

A fact about an entity always names its value verbatim (``... was born in Velmor.``, ``... in
1843.``), and each document contains at most one year, so every hop of a question can be
answered by copying a span of one document.
"""

from __future__ import annotations

from creditgym.envs.world.entities import (
    CITY,
    COUNTRY,
    OCCUPATIONS,
    ORG,
    PERSON,
    SECTORS,
    WORK,
    WORK_TYPES,
    EntityGraph,
    members,
)

_MASK = (1 << 64) - 1

T = {
    # person
    "person_intro": (
        "{s} was {a_occ}.",
        "{s} was {a_occ} by profession.",
        "{s} worked as {a_occ}.",
    ),
    "born_in": (
        "{s} was born in {o}.",
        "{s} was born in the city of {o}.",
        "{o} was the birthplace of {s}.",
    ),
    "birth_year": (
        "{s} was born in {o}.",
        "{s} was born in the year {o}.",
        "The year of birth of {s} is {o}.",
    ),
    "works_for": (
        "{s} worked for {o}.",
        "{s} was employed by {o}.",
        "For many years {s} worked at {o}.",
    ),
    "founded": ("{s} founded {o}.", "{s} was the founder of {o}.", "{o} was founded by {s}."),
    "wrote": (
        "{s} wrote {o}, a {t}.",
        "{s} is the author of the {t} {o}.",
        "{o} is a {t} written by {s}.",
    ),
    # city
    "city_intro": ("{s} is a city.", "{s} is an old city.", "{s} is a city with a long history."),
    "located_in": (
        "{s} is located in {o}.",
        "{s} lies in {o}.",
        "{s} is a city in the country of {o}.",
    ),
    "city_founded": (
        "{s} was founded in {o}.",
        "{s} was founded in the year {o}.",
        "The city of {s} dates from {o}.",
    ),
    "capital_of": (
        "{s} is the capital of {o}.",
        "{s} serves as the capital of {o}.",
        "{s} is the capital city of {o}.",
    ),
    "natives": (
        "Notable people born in {s} include {o}.",
        "{o} were born in {s}.",
        "People from {s} include {o}.",
    ),
    "native": (
        "{o} was born in {s}.",
        "{o} came from {s}.",
        "A notable person born in {s} is {o}.",
    ),
    "home_of": ("{s} is home to {o}.", "{o} is headquartered in {s}.", "The city hosts {o}."),
    # country
    "country_intro": (
        "{s}, officially the {t}, is a country.",
        "{s} is a country, officially known as the {t}.",
        "The {t}, commonly called {s}, is a country.",
    ),
    "capital": (
        "The capital of {s} is {o}.",
        "{o} is the capital of {s}.",
        "{s} has its capital at {o}.",
    ),
    "established": (
        "{s} was established in {o}.",
        "{s} was founded as a state in {o}.",
        "{s} became a state in {o}.",
    ),
    "cities": (
        "Other cities in {s} include {o}.",
        "{o} are also cities in {s}.",
        "Besides its capital, {s} has cities such as {o}.",
    ),
    "city": (
        "{o} is another city in {s}.",
        "{o} is also a city in {s}.",
        "{s} also includes the city of {o}.",
    ),
    # organisation
    "org_intro": (
        "{s} is a {t} organisation.",
        "{s} is an organisation active in {t}.",
        "{s} is a {t} organisation of some renown.",
    ),
    "founder": ("{s} was founded by {o}.", "{o} founded {s}.", "The founder of {s} was {o}."),
    "org_founded": (
        "{s} was founded in {o}.",
        "{s} was established in {o}.",
        "{s} has existed since {o}.",
    ),
    "headquarters": (
        "{s} is headquartered in {o}.",
        "The headquarters of {s} are in {o}.",
        "{s} has its headquarters in {o}.",
    ),
    # work
    "work_intro": ("{s} is a {t}.", "{s} is a well-known {t}.", "{s} is a {t} of some renown."),
    "author": ("{s} was written by {o}.", "{o} wrote {s}.", "The author of {s} is {o}."),
    "published": (
        "{s} was first published in {o}.",
        "{s} was published in {o}.",
        "{s} appeared in {o}.",
    ),
    "set_in": (
        "{s} is set in {o}.",
        "The story of {s} takes place in {o}.",
        "{s} takes place in the city of {o}.",
    ),
    # landmark
    "landmark_intro": (
        "{s} is a landmark.",
        "{s} is a well-known landmark.",
        "{s} is a historic landmark.",
    ),
    "location": (
        "{s} stands in {o}.",
        "{s} is located in {o}.",
        "{s} can be found in the city of {o}.",
    ),
    "architect": ("{s} was designed by {o}.", "{o} designed {s}.", "The architect of {s} was {o}."),
    "completed": (
        "{s} was completed in {o}.",
        "Construction of {s} was finished in {o}.",
        "{s} was built in {o}.",
    ),
}
"""Sentence templates: ``{s}`` the subject, ``{o}`` the value, ``{t}``/``{a_occ}`` a descriptor."""

MAX_LISTED = 3
"""At most this many related entities are listed in a 'people born here' style sentence."""


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def doc_key(seed: int, docid: int) -> int:
    """splitmix64 of (seed, docid): the per-document source of wording choices."""
    z = (seed * 0xD1B54A32D192ED03 + docid * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class _Picker:
    """Draws small choices from one 64-bit key (mixed radix), re-hashing when it runs low."""

    __slots__ = ("r",)

    def __init__(self, key: int) -> None:
        self.r = key

    def __call__(self, m: int) -> int:
        if self.r < 1 << 20:
            self.r = doc_key(self.r, 1) | (1 << 63)
        self.r, v = divmod(self.r, m)
        return v


def render_body(g: EntityGraph, docid: int) -> str:
    """The body text of document ``docid`` (the title is the entity's name)."""
    kind, i = int(g.doc_kind[docid]), int(g.doc_index[docid])
    pick = _Picker(doc_key(g.seed, docid))
    s = g.name(kind, i)
    facts: list[tuple[str, dict]] = []  # (template key, fields)

    if kind == PERSON:
        intro = ("person_intro", {"a_occ": _article(OCCUPATIONS[g.person_occupation[i]])})
        facts.append(("born_in", {"o": g.name(CITY, g.person_city[i])}))
        facts.append(("birth_year", {"o": int(g.person_year[i])}))
        facts.append(("works_for", {"o": g.name(ORG, g.person_employer[i])}))
        if g.person_founded[i] >= 0:
            facts.append(("founded", {"o": g.name(ORG, g.person_founded[i])}))
        if g.person_wrote[i] >= 0:
            w = int(g.person_wrote[i])
            facts.append(("wrote", {"o": g.name(WORK, w), "t": WORK_TYPES[g.work_type[w]]}))
    elif kind == CITY:
        intro = ("city_intro", {})
        co = int(g.city_country[i])
        if g.country_capital[co] == i:
            facts.append(("capital_of", {"o": g.name(COUNTRY, co)}))
        else:
            facts.append(("located_in", {"o": g.name(COUNTRY, co)}))
        facts.append(("city_founded", {"o": int(g.city_year[i])}))
        people = [g.name(PERSON, p) for p in members(g.city_natives, i, MAX_LISTED)]
        if people:
            facts.append(("natives" if len(people) > 1 else "native", {"o": _join(people)}))
        orgs = [g.name(ORG, o) for o in members(g.city_orgs, i, 1)]
        if orgs:
            facts.append(("home_of", {"o": orgs[0]}))
    elif kind == COUNTRY:
        intro = ("country_intro", {"t": g.official_name(i)})
        cap = int(g.country_capital[i])
        facts.append(("capital", {"o": g.name(CITY, cap)}))
        facts.append(("established", {"o": int(g.country_year[i])}))
        others = [c for c in members(g.country_cities, i, MAX_LISTED + 1) if c != cap][:MAX_LISTED]
        if others:
            names = [g.name(CITY, c) for c in others]
            facts.append(("cities" if len(names) > 1 else "city", {"o": _join(names)}))
    elif kind == ORG:
        intro = ("org_intro", {"t": SECTORS[g.org_sector[i]]})
        facts.append(("founder", {"o": g.name(PERSON, g.org_founder[i])}))
        facts.append(("org_founded", {"o": int(g.org_year[i])}))
        facts.append(("headquarters", {"o": g.name(CITY, g.org_city[i])}))
    elif kind == WORK:
        intro = ("work_intro", {"t": WORK_TYPES[g.work_type[i]]})
        facts.append(("author", {"o": g.name(PERSON, g.work_author[i])}))
        facts.append(("published", {"o": int(g.work_year[i])}))
        facts.append(("set_in", {"o": g.name(CITY, g.work_city[i])}))
    else:  # LANDMARK
        intro = ("landmark_intro", {})
        facts.append(("location", {"o": g.name(CITY, g.landmark_city[i])}))
        facts.append(("architect", {"o": g.name(PERSON, g.landmark_architect[i])}))
        facts.append(("completed", {"o": int(g.landmark_year[i])}))

    # Fisher-Yates shuffle of the facts, then one phrasing per sentence.
    for j in range(len(facts) - 1, 0, -1):
        k = pick(j + 1)
        facts[j], facts[k] = facts[k], facts[j]
    out = []
    for key, fields in [intro, *facts]:
        sentence = T[key][pick(3)].format(s=s, **fields)
        out.append(sentence[0].upper() + sentence[1:])
    return " ".join(out)
