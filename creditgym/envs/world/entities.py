"""The entity graph: kinds, functional relations and names, stored as flat numpy arrays.

Six kinds of entity (person, city, country, organisation, work, landmark). Each kind keeps one
array per attribute, indexed by the entity's position within its kind: name codes (``int64``,
rendered by :mod:`names`), references to other entities (``int32`` indices, ``-1`` for none) and
years (``int16``). There is no Python object per entity, so a 1,000,000-document world is a few
tens of MB of arrays.

Every relation is functional (one value per subject), which is what makes multi-hop questions
have exactly one answer: a person is born in one city, founds at most one organisation (each
organisation has one founder), writes at most one work (each work has one author), works for one
organisation; a city lies in one country; a country has one capital (a city inside it); an
organisation has one headquarters city; a work is set in one city; a landmark stands in one city
and has one architect. Years follow the references (an organisation is founded 22-65 years after
its founder's birth, ...).

Documents get ids ``"0" .. str(N-1)`` in a seeded random order over all kinds, so neither an id
nor its neighbours reveal a kind or a near-duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from creditgym.envs.world import names as nm
from creditgym.envs.world.config import WorldConfig

PERSON, CITY, COUNTRY, ORG, WORK, LANDMARK = range(6)
KINDS: tuple[str, ...] = ("person", "city", "country", "organisation", "work", "landmark")
"""Kind names, indexed by the kind constants above."""
KIND_SHARES: tuple[float, ...] = (0.40, 0.14, 0.03, 0.15, 0.18, 0.10)
"""Share of the documents that each kind gets."""

OCCUPATIONS: tuple[str, ...] = (
    "painter",
    "poet",
    "architect",
    "composer",
    "merchant",
    "physician",
    "astronomer",
    "sculptor",
    "historian",
    "engineer",
    "botanist",
    "philosopher",
)
SECTORS: tuple[str, ...] = (
    "shipping",
    "banking",
    "publishing",
    "mining",
    "textile",
    "brewing",
    "engineering",
    "insurance",
    "printing",
    "glassmaking",
)
WORK_TYPES: tuple[str, ...] = ("novel", "play", "poem", "opera", "treatise", "memoir")

# One random stream per purpose: changing one part of the generator leaves the others as they were.
_STREAM_NAMES, _STREAM_FACTS, _STREAM_LAYOUT, _STREAM_SPLIT = 1, 2, 3, 4


def kind_counts(num_documents: int) -> list[int]:
    """Entities of each kind for a world of ``num_documents`` documents (persons take the rest)."""
    counts = [max(4, int(num_documents * share)) for share in KIND_SHARES]
    counts[PERSON] = num_documents - sum(counts[1:])
    return counts


@dataclass
class EntityGraph:
    """All entities and facts of one world, as arrays (see the module docstring)."""

    seed: int
    counts: list[int]
    # person
    person_given: np.ndarray
    person_family: np.ndarray
    person_city: np.ndarray
    person_year: np.ndarray
    person_occupation: np.ndarray
    person_employer: np.ndarray
    person_founded: np.ndarray
    person_wrote: np.ndarray
    # city
    city_code: np.ndarray
    city_country: np.ndarray
    city_year: np.ndarray
    # country
    country_code: np.ndarray
    country_form: np.ndarray
    country_capital: np.ndarray
    country_year: np.ndarray
    # organisation
    org_code: np.ndarray
    org_type: np.ndarray
    org_sector: np.ndarray
    org_founder: np.ndarray
    org_city: np.ndarray
    org_year: np.ndarray
    # work
    work_code: np.ndarray
    work_adjective: np.ndarray
    work_type: np.ndarray
    work_author: np.ndarray
    work_city: np.ndarray
    work_year: np.ndarray
    # landmark
    landmark_code: np.ndarray
    landmark_type: np.ndarray
    landmark_city: np.ndarray
    landmark_architect: np.ndarray
    landmark_year: np.ndarray
    # near-duplicates: index of the entity each one imitates, -1 for ordinary entities
    twin_of: list[np.ndarray]
    # document layout
    doc_kind: np.ndarray
    doc_index: np.ndarray
    kind_doc: list[np.ndarray]
    # reverse lists for "notable people born here" style sentences (CSR: offsets, members)
    city_natives: tuple[np.ndarray, np.ndarray]
    city_orgs: tuple[np.ndarray, np.ndarray]
    country_cities: tuple[np.ndarray, np.ndarray]
    # split: True where the document's entity starts test questions
    doc_is_test: np.ndarray

    @property
    def num_documents(self) -> int:
        return len(self.doc_kind)

    # ---- names -------------------------------------------------------------------------------
    def name(self, kind: int, i: int) -> str:
        """The entity's unique name, which is also its document title."""
        if kind == PERSON:
            return (
                f"{nm.GIVEN.decode(self.person_given[i])} {nm.FAMILY.decode(self.person_family[i])}"
            )
        if kind == CITY:
            return nm.CITY.decode(self.city_code[i])
        if kind == COUNTRY:
            return nm.COUNTRY.decode(self.country_code[i])
        if kind == ORG:
            return f"{nm.WORD.decode(self.org_code[i])} {nm.ORG_TYPES[self.org_type[i]]}"
        if kind == WORK:
            adj = nm.WORK_ADJECTIVES[self.work_adjective[i]]
            return f"The {adj} {nm.WORD.decode(self.work_code[i])}"
        if kind == LANDMARK:
            kind_word = nm.LANDMARK_TYPES[self.landmark_type[i]]
            return f"{nm.WORD.decode(self.landmark_code[i])} {kind_word}"
        raise ValueError(f"unknown entity kind {kind}")

    def aliases(self, kind: int, i: int) -> tuple[str, ...]:
        """Accepted answer strings for the entity: its name first, then natural aliases."""
        name = self.name(kind, i)
        if kind == CITY:
            return (name, f"{name} City")
        if kind == COUNTRY:
            return (name, self.official_name(i))
        if kind == WORK:
            return (name, name[len("The ") :])
        return (name,)

    def official_name(self, country: int) -> str:
        """``Republic of Veloria``-style official name of a country."""
        form = nm.COUNTRY_FORMS[self.country_form[country]]
        return f"{form} of {self.name(COUNTRY, country)}"

    def title(self, docid: int) -> str:
        """Title of document ``docid`` (the name of its entity)."""
        return self.name(int(self.doc_kind[docid]), int(self.doc_index[docid]))

    def docid(self, kind: int, i: int) -> int:
        """Document id (as an int) of an entity."""
        return int(self.kind_doc[kind][i])


def members(csr: tuple[np.ndarray, np.ndarray], i: int, limit: int) -> list[int]:
    off, ids = csr
    return [int(x) for x in ids[off[i] : min(off[i + 1], off[i] + limit)]]


def _csr(owner: np.ndarray, n_owners: int) -> tuple[np.ndarray, np.ndarray]:
    """Group item indices by ``owner`` (stable, so members keep index order)."""
    order = np.argsort(owner, kind="stable").astype(np.int32)
    off = np.zeros(n_owners + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=n_owners), out=off[1:])
    return off, order


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _names_with_twins(
    rng: np.random.Generator,
    n: int,
    n_twins: int,
    fresh,
    mutate,
) -> tuple[np.ndarray, np.ndarray]:
    """Unique name keys: ``n - n_twins`` fresh ones, then near-duplicates of random fresh ones.

    ``fresh(m)`` draws ``m`` keys (repeats allowed); ``mutate(keys)`` changes one syllable.
    Returns ``(keys, twin_of)``; a twin that cannot be made unique is replaced by a fresh key and
    counts as an ordinary entity.
    """
    n_base = n - n_twins
    base = nm.unique_fill(fresh, n_base)
    twin_of = np.full(n, -1, dtype=np.int32)
    if n_twins == 0:
        return base, twin_of
    src = rng.choice(n_base, size=n_twins, replace=n_twins > n_base).astype(np.int32)
    twins = np.full(n_twins, -1, dtype=np.int64)
    todo = np.arange(n_twins)
    taken = base
    for _ in range(8):
        if len(todo) == 0:
            break
        cand = mutate(base[src[todo]])
        _, first = np.unique(cand, return_index=True)
        ok = np.zeros(len(cand), dtype=bool)
        ok[first] = True
        ok &= ~np.isin(cand, taken)
        twins[todo[ok]] = cand[ok]
        taken = np.concatenate([taken, cand[ok]])
        todo = todo[~ok]
    keys = np.concatenate([base, twins])
    twin_of[n_base:] = src
    if len(todo):
        extra = nm.unique_fill(fresh, len(todo), exclude=taken)
        keys[n_base + todo] = extra
        twin_of[n_base + todo] = -1
    return keys, twin_of


def build_graph(config: WorldConfig) -> EntityGraph:
    """Generate every entity, name and fact of the world described by ``config``."""
    seed = config.seed
    counts = kind_counts(config.num_documents)
    n_p, n_ci, n_co, n_o, n_w, n_l = counts
    twins = [
        0 if k == COUNTRY else round(config.distractor_fraction * c) for k, c in enumerate(counts)
    ]

    # ---- names --------------------------------------------------------------------------------
    rn = _rng(seed, _STREAM_NAMES)
    # Persons: given names from a pool (common first names repeat), family names from a larger
    # pool (families share surnames); the full name is the key given * |FAMILY| + family.
    given_pool = nm.GIVEN.sample_unique(rn, min(nm.GIVEN.size // 4, max(200, n_p // 40)))
    family_pool = nm.FAMILY.sample_unique(rn, max(100, n_p // 3))
    fsize = np.int64(nm.FAMILY.size)

    def person_fresh(m: int) -> np.ndarray:
        g = given_pool[rn.integers(0, len(given_pool), m)]
        f = family_pool[rn.integers(0, len(family_pool), m)]
        return g * fsize + f

    def person_mutate(keys: np.ndarray) -> np.ndarray:
        g, f = keys // fsize, keys % fsize
        which = rn.random(len(keys)) < 0.8  # mostly the family name changes
        f = np.where(which, nm.FAMILY.mutate(rn, f), f)
        g = np.where(which, g, nm.GIVEN.mutate(rn, g))
        return g * fsize + f

    p_key, p_twin = _names_with_twins(rn, n_p, twins[PERSON], person_fresh, person_mutate)

    def word_kind(space: nm.WordSpace, n_types: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        nt = np.int64(n_types)
        return _names_with_twins(
            rn,
            counts[k],
            twins[k],
            lambda m: space.sample(rn, m) * nt + rn.integers(0, n_types, m),
            lambda keys: space.mutate(rn, keys // nt) * nt + keys % nt,
        )

    ci_key, ci_twin = word_kind(nm.CITY, 1, CITY)
    co_key, co_twin = word_kind(nm.COUNTRY, 1, COUNTRY)
    o_key, o_twin = word_kind(nm.WORD, len(nm.ORG_TYPES), ORG)
    w_key, w_twin = word_kind(nm.WORD, len(nm.WORK_ADJECTIVES), WORK)
    l_key, l_twin = word_kind(nm.WORD, len(nm.LANDMARK_TYPES), LANDMARK)

    # ---- facts --------------------------------------------------------------------------------
    rf = _rng(seed, _STREAM_FACTS)

    def ri(lo: int, hi: int, n: int, dtype=np.int32) -> np.ndarray:
        return rf.integers(lo, hi, n).astype(dtype)

    def share(values: np.ndarray, twin_of: np.ndarray) -> np.ndarray:
        """Near-duplicates take the value of the entity they imitate."""
        t = twin_of >= 0
        values[t] = values[twin_of[t]]
        return values

    # cities and countries
    city_country = share(ri(0, n_co, n_ci), ci_twin)
    city_year = share(ri(600, 1900, n_ci, np.int16), ci_twin)
    country_capital = rf.permutation(n_ci)[:n_co].astype(np.int32)
    city_country[country_capital] = np.arange(n_co, dtype=np.int32)
    country_year = ri(800, 1950, n_co, np.int16)
    country_form = ri(0, len(nm.COUNTRY_FORMS), n_co, np.uint8)

    # persons
    person_city = share(ri(0, n_ci, n_p), p_twin)
    person_year = share(ri(1700, 1980, n_p, np.int16), p_twin)
    person_occ = share(ri(0, len(OCCUPATIONS), n_p, np.uint8), p_twin)
    person_employer = ri(0, n_o, n_p)

    # organisations: distinct founders
    org_founder = rf.choice(n_p, size=n_o, replace=False).astype(np.int32)
    person_founded = np.full(n_p, -1, dtype=np.int32)
    person_founded[org_founder] = np.arange(n_o, dtype=np.int32)
    org_year = (person_year[org_founder] + ri(22, 66, n_o)).astype(np.int16)
    org_city = share(ri(0, n_ci, n_o), o_twin)
    org_sector = share(ri(0, len(SECTORS), n_o, np.uint8), o_twin)

    # works: distinct authors
    work_author = rf.choice(n_p, size=n_w, replace=False).astype(np.int32)
    person_wrote = np.full(n_p, -1, dtype=np.int32)
    person_wrote[work_author] = np.arange(n_w, dtype=np.int32)
    work_year = (person_year[work_author] + ri(18, 61, n_w)).astype(np.int16)
    work_city = share(ri(0, n_ci, n_w), w_twin)
    work_type = share(ri(0, len(WORK_TYPES), n_w, np.uint8), w_twin)

    # landmarks: near-duplicates share city, architect and year
    landmark_city = share(ri(0, n_ci, n_l), l_twin)
    landmark_architect = share(ri(0, n_p, n_l), l_twin)
    landmark_year = share(
        (person_year[landmark_architect] + ri(25, 71, n_l)).astype(np.int16), l_twin
    )

    # ---- layout and split -----------------------------------------------------------------------
    n = sum(counts)
    rl = _rng(seed, _STREAM_LAYOUT)
    kinds = np.repeat(np.arange(6, dtype=np.uint8), counts)
    index = np.concatenate([np.arange(c, dtype=np.int32) for c in counts])
    perm = rl.permutation(n)
    doc_kind, doc_index = kinds[perm], index[perm]
    kind_doc = [np.empty(c, dtype=np.int32) for c in counts]
    for k in range(6):
        sel = np.flatnonzero(doc_kind == k).astype(np.int32)
        kind_doc[k][doc_index[sel]] = sel
    doc_is_test = _rng(seed, _STREAM_SPLIT).random(n) < config.test_fraction

    fsz = np.int64(nm.FAMILY.size)
    return EntityGraph(
        seed=seed,
        counts=counts,
        person_given=p_key // fsz,
        person_family=p_key % fsz,
        person_city=person_city,
        person_year=person_year,
        person_occupation=person_occ,
        person_employer=person_employer,
        person_founded=person_founded,
        person_wrote=person_wrote,
        city_code=ci_key,
        city_country=city_country,
        city_year=city_year,
        country_code=co_key,
        country_form=country_form,
        country_capital=country_capital,
        country_year=country_year,
        org_code=o_key // len(nm.ORG_TYPES),
        org_type=(o_key % len(nm.ORG_TYPES)).astype(np.uint8),
        org_sector=org_sector,
        org_founder=org_founder,
        org_city=org_city,
        org_year=org_year,
        work_code=w_key // len(nm.WORK_ADJECTIVES),
        work_adjective=(w_key % len(nm.WORK_ADJECTIVES)).astype(np.uint8),
        work_type=work_type,
        work_author=work_author,
        work_city=work_city,
        work_year=work_year,
        landmark_code=l_key // len(nm.LANDMARK_TYPES),
        landmark_type=(l_key % len(nm.LANDMARK_TYPES)).astype(np.uint8),
        landmark_city=landmark_city,
        landmark_architect=landmark_architect,
        landmark_year=landmark_year,
        twin_of=[p_twin, ci_twin, co_twin, o_twin, w_twin, l_twin],
        doc_kind=doc_kind,
        doc_index=doc_index,
        kind_doc=kind_doc,
        city_natives=_csr(person_city, n_ci),
        city_orgs=_csr(org_city, n_ci),
        country_cities=_csr(city_country, n_co),
        doc_is_test=doc_is_test,
    )
