"""Invented names: syllable-based word spaces that encode every name as one integer.

A word is ``k`` syllables (onset + nucleus, e.g. ``ke``, ``drei``) followed by a final part (a
coda such as ``n``/``rn`` or, for countries, a closing syllable such as ``ria``). Onsets and codas
are consonant-only strings, nuclei are vowel-only strings and no word starts with a vowel, so a
word splits back into its parts in exactly one way: distinct codes always give distinct strings.
That is what lets the world keep only integer codes (numpy ``int64``) per entity and render names
on demand, and still guarantee unique titles.

Distractor names come from :meth:`WordSpace.mutate`: the same word with one syllable's onset or
nucleus changed (``Kelmor`` -> ``Kalmor``), so a near-duplicate title differs by one syllable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ONSETS: tuple[str, ...] = (
    "b",
    "d",
    "f",
    "g",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "gr",
    "kr",
    "tr",
    "st",
    "th",
    "sh",
    "vr",
)
"""Syllable onsets (consonants only; no ``c``, ``w``, ``y``, so English type words never parse)."""
NUCLEI: tuple[str, ...] = ("a", "e", "i", "o", "u", "ei")
"""Syllable nuclei (vowels only)."""
SYLLABLES: tuple[str, ...] = tuple(o + n for o in ONSETS for n in NUCLEI)
"""All onset+nucleus syllables; index ``o * len(NUCLEI) + n``."""

CODAS: tuple[str, ...] = ("", "n", "r", "l", "s", "th", "sh", "k", "m", "rn", "nd")
"""Word endings for given names, family names and the invented words inside longer names."""
CITY_CODAS: tuple[str, ...] = ("n", "r", "l", "s", "th", "rn", "nd", "sk", "rk", "m")
"""City endings: never empty, so a city name always ends in a consonant."""
COUNTRY_FINALS: tuple[str, ...] = ("ria", "nia", "lia", "via", "dia", "sia", "ra", "na")
"""Country endings: a closing syllable ending in ``a``, so countries and cities never collide."""


def _parse_word(word: str, finals: tuple[str, ...], counts: tuple[int, ...]) -> bool:
    """Whether ``word`` belongs to the word space with these finals and syllable counts."""
    w = word.lower()
    for fin in finals:
        if not w.endswith(fin):
            continue
        stem = w[: len(w) - len(fin)] if fin else w
        n = _count_syllables(stem)
        if n is not None and n in counts:
            return True
    return False


def _count_syllables(stem: str) -> int | None:
    """Number of onset+nucleus syllables ``stem`` splits into, or None if it does not split."""
    n, i = 0, 0
    while i < len(stem):
        j = i
        while j < len(stem) and stem[j] not in "aeiou":
            j += 1
        k = j
        while k < len(stem) and stem[k] in "aeiou":
            k += 1
        if stem[i:j] not in ONSETS or stem[j:k] not in NUCLEI:
            return None
        n, i = n + 1, k
    return n


@dataclass(frozen=True)
class WordSpace:
    """Capitalised words of ``k`` syllables (``k`` in ``counts``) plus one of ``finals``.

    Codes are laid out block by block (one block per syllable count); inside a block,
    ``code = ((s_1 * S + s_2) * S + ...) * F + final`` with ``S`` syllables and ``F`` finals.
    """

    counts: tuple[int, ...]
    """Syllable counts before the final part, e.g. ``(2, 3)``."""
    finals: tuple[str, ...]
    """The closing parts (codas or closing syllables)."""
    weights: tuple[float, ...] = ()
    """Sampling weight per block (per entry of ``counts``); uniform over blocks if empty."""
    _blocks: tuple[tuple[int, int, int], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        blocks, off = [], 0
        for k in self.counts:
            size = len(SYLLABLES) ** k * len(self.finals)
            blocks.append((k, off, size))
            off += size
        object.__setattr__(self, "_blocks", tuple(blocks))

    @property
    def size(self) -> int:
        """Number of distinct words."""
        _k, off, size = self._blocks[-1]
        return off + size

    def decode(self, code: int) -> str:
        """The word with this code."""
        code = int(code)
        for k, off, size in self._blocks:
            if code < off + size:
                break
        rel, fin = divmod(code - off, len(self.finals))
        parts = []
        for _ in range(k):
            rel, s = divmod(rel, len(SYLLABLES))
            parts.append(SYLLABLES[s])
        parts.append(self.finals[fin])
        word = "".join(parts)
        return word[0].upper() + word[1:]

    def contains(self, word: str) -> bool:
        """Whether ``word`` is a word of this space (used to prove type words never collide)."""
        return word[:1].isupper() and _parse_word(word, self.finals, self.counts)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` random codes (with repeats), block chosen by ``weights``, uniform inside."""
        w = np.asarray(self.weights or [1.0] * len(self._blocks), dtype=float)
        which = rng.choice(len(self._blocks), size=n, p=w / w.sum())
        offs = np.array([b[1] for b in self._blocks], dtype=np.int64)
        sizes = np.array([b[2] for b in self._blocks], dtype=np.int64)
        return offs[which] + (rng.random(n) * sizes[which]).astype(np.int64)

    def sample_unique(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` distinct random codes."""
        return unique_fill(lambda m: self.sample(rng, m), n)

    def mutate(self, rng: np.random.Generator, codes: np.ndarray) -> np.ndarray:
        """Each code with one syllable's onset or nucleus replaced by a different one."""
        codes = np.asarray(codes, dtype=np.int64)
        out = codes.copy()
        s_count, f_count, n_nuc = len(SYLLABLES), len(self.finals), len(NUCLEI)
        for k, off, size in self._blocks:
            mask = (codes >= off) & (codes < off + size)
            if not mask.any():
                continue
            c = codes[mask]
            m = len(c)
            pos = rng.integers(0, k, size=m)
            place = np.int64(f_count) * np.power(np.int64(s_count), pos.astype(np.int64))
            syl = (c - off) // place % s_count
            onset, nucleus = syl // n_nuc, syl % n_nuc
            change_onset = rng.random(m) < 0.6
            onset = np.where(
                change_onset, (onset + rng.integers(1, len(ONSETS), size=m)) % len(ONSETS), onset
            )
            nucleus = np.where(
                change_onset, nucleus, (nucleus + rng.integers(1, n_nuc, size=m)) % n_nuc
            )
            out[mask] = c + (onset * n_nuc + nucleus - syl) * place
        return out


def unique_fill(draw, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """``n`` distinct values from repeated calls of ``draw(m)``, first occurrences kept in order.

    Values in ``exclude`` are never returned. Raises RuntimeError if the space looks exhausted.
    """
    out = np.empty(0, dtype=np.int64)
    for _ in range(64):
        need = n - len(out)
        if need <= 0:
            break
        cand = np.concatenate([out, np.asarray(draw(need + need // 8 + 16), dtype=np.int64)])
        _, first = np.unique(cand, return_index=True)
        cand = cand[np.sort(first)]
        if exclude is not None and len(exclude):
            cand = cand[~np.isin(cand, exclude)]
        out = cand[:n]
    if len(out) < n:
        raise RuntimeError(f"could not draw {n} distinct names; the name space is too small")
    return out


GIVEN = WordSpace(counts=(2,), finals=CODAS)
"""Given names (``Kelan``)."""
FAMILY = WordSpace(counts=(2, 3), finals=CODAS, weights=(0.7, 0.3))
"""Family names (``Verish``, ``Dorasemin``)."""
WORD = WordSpace(counts=(2, 3), finals=CODAS, weights=(0.7, 0.3))
"""The invented word in organisation, work and landmark names."""
CITY = WordSpace(counts=(2, 3), finals=CITY_CODAS, weights=(0.6, 0.4))
"""City names (``Velmor``); always end in a consonant."""
COUNTRY = WordSpace(counts=(1, 2), finals=COUNTRY_FINALS, weights=(0.4, 0.6))
"""Country names (``Veloria``); always end in ``a``."""

ORG_TYPES: tuple[str, ...] = (
    "Guild",
    "Institute",
    "Society",
    "Company",
    "Academy",
    "Foundation",
    "Union",
    "Museum",
)
"""Second word of organisation names (``Kelmor Guild``)."""
LANDMARK_TYPES: tuple[str, ...] = (
    "Tower",
    "Bridge",
    "Cathedral",
    "Palace",
    "Library",
    "Observatory",
    "Castle",
    "Abbey",
)
"""Second word of landmark names (``Dravin Bridge``)."""
WORK_ADJECTIVES: tuple[str, ...] = (
    "Silent",
    "Golden",
    "Broken",
    "Hidden",
    "Last",
    "Distant",
    "Winter",
    "Crimson",
    "Burning",
    "Quiet",
    "Lost",
    "Iron",
    "Pale",
    "Hollow",
    "Bright",
    "Fallen",
    "Second",
    "Endless",
    "Wandering",
    "Sleeping",
    "Northern",
    "Forgotten",
    "Glass",
    "Shining",
)
"""Adjectives of work titles (``The Silent Kelmor``)."""
COUNTRY_FORMS: tuple[str, ...] = ("Republic", "Kingdom", "Principality", "Federation")
"""Official country names: ``Republic of Veloria`` (a natural alias of ``Veloria``)."""
