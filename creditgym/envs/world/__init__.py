"""The built-in procedural world: a seeded fictional encyclopedia and multi-hop questions over it.

Entities of six kinds (people, cities, countries, organisations, works, landmarks) get invented,
unique names and functional facts (born in, founded, located in, capital, author of, year, ...);
each has one wiki-18 document written from several sentence templates; questions of 1 to
``max_hops`` hops compose the facts, and each carries the chain of documents that proves it.
No pre-trained model has seen any of it, and everything is a pure function of the seed.

    from creditgym.envs.world import WorldConfig, World
    world = World.generate(WorldConfig(seed=0, num_documents=3000))
    world.write_corpus("runs/world/corpus.jsonl")
    tasks = world.questions("train")

Modules: :mod:`names` (syllable word spaces), :mod:`entities` (the numpy entity graph),
:mod:`documents` (templated article text), :mod:`questions` (multi-hop composition and splits),
:mod:`world` (the ``World`` facade).
"""

from creditgym.envs.world.config import WorldConfig
from creditgym.envs.world.questions import RELATIONS, SPLITS, WorldTooSmallError
from creditgym.envs.world.world import World, generate_world

__all__ = ["RELATIONS", "SPLITS", "World", "WorldConfig", "WorldTooSmallError", "generate_world"]
