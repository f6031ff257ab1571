"""Shared fixtures for the retrieval tests: a small wiki-18 JSONL corpus written to a tmp dir.

The corpus mixes hand-written passages on distinct topics (so a title query, or a paraphrase for
the dense backend, has one clear answer) with procedurally generated filler passages (so BM25's
document-frequency statistics are not degenerate). It is deterministic: same ids, same text, on
every run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

# (id, title, body). Titles are distinctive so a title query ranks its own passage first.
TOPIC_DOCS: list[tuple[str, str, str]] = [
    ("d0", "Cheetah", "The cheetah is a large cat native to Africa and central Iran. It is the "
     "fastest land animal, capable of running at 80 to 98 km/h, and has evolved specialized "
     "adaptations for speed, including a light build, long thin legs and a long tail."),
    ("d1", "Photosynthesis", "Photosynthesis is the process by which green plants and some other "
     "organisms use sunlight to synthesize sugars from carbon dioxide and water, releasing oxygen "
     "as a by-product. It takes place mainly in the chloroplasts of leaf cells."),
    ("d2", "Mount Everest", "Mount Everest is Earth's highest mountain above sea level, located "
     "in the Mahalangur Himal sub-range of the Himalayas. The China-Nepal border runs across its "
     "summit point, which stands 8,849 metres high."),
    ("d3", "Johann Sebastian Bach", "Johann Sebastian Bach was a German composer and musician of "
     "the late Baroque period. He is known for the Brandenburg Concertos, the Mass in B minor, "
     "the Goldberg Variations and many cantatas, fugues and organ works."),
    ("d4", "Python (programming language)", "Python is a high-level, general-purpose programming "
     "language. Its design philosophy emphasizes code readability with the use of significant "
     "indentation. Guido van Rossum began working on Python in the late 1980s."),
    ("d5", "Great Barrier Reef", "The Great Barrier Reef is the world's largest coral reef "
     "system, composed of over 2,900 individual reefs and 900 islands stretching over 2,300 "
     "kilometres off the coast of Queensland, Australia."),
    ("d6", "Volcano", "A volcano is a rupture in the crust of a planetary-mass object, such as "
     "Earth, that allows hot lava, volcanic ash, and gases to escape from a magma chamber below "
     "the surface. Eruptions can bury nearby towns under ash."),
    ("d7", "Marie Curie", "Marie Curie was a Polish and naturalised-French physicist and chemist "
     "who conducted pioneering research on radioactivity. She was the first woman to win a Nobel "
     "Prize and the only person to win Nobel Prizes in two scientific fields."),
    ("d8", "Espresso", "Espresso is a coffee-brewing method of Italian origin, in which a small "
     "amount of nearly boiling water is forced under pressure through finely-ground coffee "
     "beans. It forms the base of drinks such as cappuccino and latte."),
    ("d9", "Antarctica", "Antarctica is Earth's southernmost and least-populated continent. "
     "Situated almost entirely south of the Antarctic Circle, it is covered by an ice sheet and "
     "is the coldest, driest and windiest of the continents."),
    ("d10", "Tour de France", "The Tour de France is an annual men's multiple-stage bicycle race "
     "held primarily in France. It is the oldest and most prestigious of the three Grand Tours, "
     "in which cyclists ride for three weeks over mountains and flat roads."),
    ("d11", "Penicillin", "Penicillin is a group of antibiotics originally obtained from "
     "Penicillium moulds. Alexander Fleming discovered it in 1928; it was among the first "
     "medicines effective against bacterial infections caused by staphylococci."),
    ("d12", "Sahara", "The Sahara is a desert spanning North Africa. With an area of 9,200,000 "
     "square kilometres it is the largest hot desert in the world, with sand dunes, rocky "
     "plateaus and very little rainfall."),
    ("d13", "Chess", "Chess is a board game for two players, played on a checkered board of 64 "
     "squares arranged in an 8x8 grid. Each player begins with sixteen pieces; the goal is to "
     "checkmate the opponent's king."),
    ("d14", "Honey bee", "A honey bee is a eusocial flying insect within the genus Apis. Honey "
     "bees are known for constructing perennial colonial nests from wax, for the large size of "
     "their colonies, and for producing and storing honey from flower nectar."),
    ("d15", "Zürich", "Zürich is the largest city in Switzerland and the capital of the canton of "
     "Zürich. It lies at the northwestern tip of Lake Zürich and is a global centre for banking "
     "and finance."),
    ("d16", "Tokyo Tower", "Tokyo Tower (東京タワー) is a communications and observation tower in "
     "the Shiba-koen district of Minato, Tokyo, Japan. At 332.9 metres it was inspired by the "
     "Eiffel Tower and is painted white and international orange."),
    ("d17", "Moscow Kremlin", "The Moscow Kremlin (Московский Кремль) is a fortified complex in "
     "the centre of Moscow. It includes five palaces, four cathedrals and the enclosing Kremlin "
     "Wall with its towers, and serves as the official residence of the President of Russia."),
    ("d18", "Lightning", "Lightning is a natural phenomenon consisting of electrostatic discharges "
     "occurring through the atmosphere between two electrically charged regions, often during a "
     "thunderstorm. A flash is followed by the sound of thunder."),
    ("d19", "Sourdough", "Sourdough is bread made by the fermentation of dough using wild "
     "lactobacillaceae and yeast. Lactic acid from fermentation imparts a sour taste and improves "
     "keeping qualities of the loaf."),
    ("d20", "Apollo 11", "Apollo 11 was the American spaceflight that first landed humans on the "
     "Moon. Commander Neil Armstrong and lunar module pilot Buzz Aldrin landed the Eagle on July "
     "20, 1969, while Michael Collins orbited in Columbia."),
    ("d21", "Violin", "The violin is a wooden string instrument in the violin family. It is the "
     "smallest and highest-pitched instrument in the family in regular use, played by drawing a "
     "bow across its four strings."),
    ("d22", "Amazon River", "The Amazon River in South America is the largest river by discharge "
     "volume of water in the world. It flows through Peru, Colombia and Brazil to the Atlantic "
     "Ocean, through the largest tropical rainforest on Earth."),
    ("d23", "Origami", "Origami is the Japanese art of paper folding. The goal is to transform a "
     "flat square sheet of paper into a finished sculpture through folding and sculpting "
     "techniques, usually without cuts or glue."),
]

_FILLER_WORDS = (
    "river valley market harbour council bridge festival parish railway school library museum "
    "garden castle village farm mill abbey chapel square tower station road forest meadow lake "
    "hill coast island province district county governor mayor merchant guild craft trade wool "
    "grain harvest season winter summer spring autumn century decade history record archive "
    "census population church court law treaty border army navy fleet battle siege peace"
).split()


def _filler_docs(n: int, seed: int = 1234) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        name = f"Fillerton {i}"
        sentences = []
        for _ in range(3):
            words = rng.sample(_FILLER_WORDS, 9)
            sentences.append(" ".join(words).capitalize() + ".")
        out.append((f"f{i}", name, f"{name} is a place. " + " ".join(sentences)))
    return out


HOSTILE_QUERIES: dict[str, str] = {
    "surrogate": "\ud800",
    "surrogate_in_word": "Velm\udfffora \ud800\ud800 tower",
    "1100_words": " ".join(f"zq{i}x" for i in range(1100)),  # over Lucene's 1,024 clauses
    "empty": "",
    "whitespace": " \t\n ",
    "punctuation": "?!.,;:()[]{}",
    "lucene_syntax": 'title:x AND (y OR "z") ~2 ^3 [a TO b] \\ / && || *',
    "control": "\x00\x07\x1b\x7f",
    "emoji_cjk": "\U0001F600 東京タワー Московский",
}
"""Query text every backend must answer without an exception (and without failing batch-mates)."""


def corpus_docs() -> list[tuple[str, str, str]]:
    """The (id, title, body) rows of the small test corpus, hand-written topics first."""
    return TOPIC_DOCS + _filler_docs(96)


def write_corpus(path: Path, docs: list[tuple[str, str, str]] | None = None) -> Path:
    """Write ``docs`` (default: :func:`corpus_docs`) as a wiki-18 JSONL file at ``path``."""
    docs = corpus_docs() if docs is None else docs
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for docid, title, body in docs:
            row = {"id": docid, "contents": f'"{title}"\n{body}'}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A 120-passage wiki-18 JSONL file (24 distinct topics + 96 filler passages)."""
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl")
