"""A scripted expert for the built-in world: follow the question's chain, reading each bridge
entity off the passages the search actually returned.

It searches hop ``t``'s entity only after the previous search showed that name, and answers only
with a string the last search showed, so it reaches the gold answer exactly when retrieval
surfaced every document of the chain. That makes it both the upper bound of what an agent can do
through a given backend and (later) the source of demonstrations for a warm start.
"""

from __future__ import annotations

import random

from creditgym.envs.task import Task

UNKNOWN = "unknown"


def expert_action(
    task: Task, turn: int, observation: str, *, syntax: str = "xml",
    early_answer_prob: float = 0.0, skip_search_prob: float = 0.0,
    rng: random.Random | None = None,
) -> str:
    """The expert's action at ``turn`` (0-based), given the observation it has just seen.

    ``early_answer_prob`` makes it imperfect on purpose, for warm-start demonstrations: after each
    search that is not the last hop, with this probability it answers with the entity it has just
    found (a bridge entity, so the answer is wrong) instead of searching on. A policy imitating it
    can call tools but stops too early on multi-hop questions, which is what RL has to fix.
    ``skip_search_prob`` is the chance that at turn 0 it gives up without searching ("unknown").
    """
    chain = task.metadata["chain"]
    if turn == 0 and skip_search_prob > 0 and (rng or random).random() < skip_search_prob:
        return _call(syntax, "answer", UNKNOWN)
    if turn > 0 and chain[turn - 1]["answer"] not in observation:
        return _call(syntax, "answer", UNKNOWN)  # retrieval missed the hop's document
    if turn < len(chain):
        if 0 < turn and early_answer_prob > 0 and (rng or random).random() < early_answer_prob:
            return _call(syntax, "answer", chain[turn - 1]["answer"])
        return _call(syntax, "search", chain[turn]["query"])
    return _call(syntax, "answer", chain[-1]["answer"])


def _call(syntax: str, tool: str, text: str) -> str:
    if syntax == "xml":
        # Spaced like Search-R1's "<search> query </search>": the name's tokens then carry the
        # leading space they have in questions and passages, so a policy copies the same ids.
        return f"<{tool}> {text} </{tool}>"
    import json

    arg = "query" if tool == "search" else "answer"
    return "<tool_call>" + json.dumps({"name": tool, "arguments": {arg: text}}) + "</tool_call>"


DEMO_OPTIONS = {"worlds": 0, "backend": "bm25s", "early_answer_prob": 0.0,
                "skip_search_prob": 0.0, "perfect": False}
"""The demonstrator's options (``SearchEnv.demonstrations``) and their defaults: ``worlds``
other worlds to demonstrate in (seeds ``world.seed + 1`` onwards, same shape, indexed with
``backend``; their names never recur in the training or test questions, so a small model must
learn to copy names rather than memorise answers; 0: the environment's own tasks), the expert's
deliberate imperfections (see ``expert_action``), and ``perfect`` (ignore them)."""


def _demonstrator_setup(env_cls, env_kwargs: dict, options: dict):
    """(the environment's ``SearchEnvConfig``, the demonstrator's options with defaults)."""
    from creditgym.envs.retrieval.base import Retriever
    from creditgym.envs.search_env import search_config
    from creditgym.errors import ConfigError

    unknown = sorted(set(options) - set(DEMO_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown demonstrator option(s) {', '.join(map(repr, unknown))} of "
                          f"{env_cls.__name__}; valid options are: {', '.join(DEMO_OPTIONS)}")
    options_only = {k: v for k, v in env_kwargs.items()
                    if k not in ("config", "tasks", "render_mode")}
    if isinstance(options_only.get("retriever"), Retriever):
        options_only.pop("retriever")  # open already: nothing to read the config from
    return search_config(env_kwargs.get("config"), options_only), {**DEMO_OPTIONS, **options}


def _demo_worlds(config, opts: dict) -> list:
    """The world configs of the demonstration worlds (seeds after the environment's)."""
    import dataclasses

    return [dataclasses.replace(config.world, seed=config.world.seed + 1 + k)
            for k in range(int(opts["worlds"]))]


def world_corpus_texts(env_cls, env_kwargs: dict, *, demonstrator: dict) -> list[str] | None:
    """Every document and training question of the environment's world and of the
    demonstrator's worlds (a tokenizer fitted to them has seen every name the agent must copy,
    in every context); None over a Search-R1 task file (no world)."""
    from creditgym.envs.world import World

    config, opts = _demonstrator_setup(env_cls, env_kwargs, demonstrator)
    if config.tasks_path is not None:
        return None
    texts: list[str] = []
    for world_config in [config.world, *_demo_worlds(config, opts)]:
        world = World.generate(world_config)
        texts += world.contents()
        texts += [t.question for t in world.questions("train")]
    return texts


def world_demonstrations(env_cls, env_kwargs: dict, *, count: int, seed: int, options: dict):
    """``count`` expert episodes, spread evenly over the demonstration worlds (source ``k``
    shuffles its tasks and draws its imperfections with ``random.Random(seed + k)``); None when
    the environment's tasks come from a Search-R1 file (no chain to follow)."""
    import dataclasses

    from creditgym.envs.demonstration import scripted_demonstrations

    config, opts = _demonstrator_setup(env_cls, env_kwargs, options)
    kwargs = dict(env_kwargs)
    if config.tasks_path is not None and not opts["worlds"]:
        return None
    early = 0.0 if opts["perfect"] else float(opts["early_answer_prob"])
    skip = 0.0 if opts["perfect"] else float(opts["skip_search_prob"])

    def make_policy(task: Task, rng: random.Random):
        return lambda obs, info, turn: expert_action(
            task, turn, obs, syntax=config.syntax, early_answer_prob=early,
            skip_search_prob=skip, rng=rng)

    def sources():
        if not opts["worlds"]:
            yield env_cls(**kwargs)
            return
        for world in _demo_worlds(config, opts):
            yield env_cls(config=dataclasses.replace(
                config, world=world, world_backend=opts["backend"], split="train",
                retriever=None, tasks_path=None))

    def demonstrations():
        n = max(1, int(opts["worlds"]))
        for k, env in enumerate(sources()):  # one world's index open at a time
            share = count // n + (k < count % n)
            yield from scripted_demonstrations(env, make_policy, count=share, seed=seed + k)

    return demonstrations()
