"""SearchEnv: question answering with a search engine, Search-R1 compatible.

The agent calls ``search(query)``, which returns the top-k passages of a retrieval backend
rendered the way Search-R1 renders them::

    <information>Doc 1(Title: T) text
    Doc 2(Title: T) text</information>

and ends the episode with ``answer(text)``. By default the tasks are the built-in world's
questions and the backend is Lucene BM25 over the world's corpus (built and cached on first use);
Search-R1 data (NQ, HotpotQA, ... parquet or JSONL) and any wiki-18 index work unchanged.

Two optional tools from recent search agents, off by default:

- ``judge`` (ReSeek): the agent states whether the evidence so far suffices to answer. A
  judgement is right when "sufficient" coincides with a gold answer appearing in what the
  searches returned; ``judge_reward`` is paid per right judgement (and charged per wrong one)
  as the ``reward/judge`` component of the final step.
- ``goal`` (RE-Searcher): the agent states an explicit search goal before searching; goals are
  echoed back and counted, so a reward or analysis can use them.

Concurrent environments share one retriever wrapped in a ``BatchingRetriever``, so searches
issued at the same time from many environments become one batched backend call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

from creditgym.config import from_dict
from creditgym.envs.retrieval import RetrieverConfig, make_retriever
from creditgym.envs.retrieval.base import Hit, Retriever
from creditgym.envs.retrieval.batching import BatchingRetriever
from creditgym.envs.rewards import RewardConfig, normalize_answer
from creditgym.envs.task import Task
from creditgym.envs.tool_env import ToolEnv, ToolEnvConfig
from creditgym.envs.tools import Tool, ToolResult
from creditgym.envs.world import WorldConfig
from creditgym.errors import ConfigError


@dataclass
class SearchEnvConfig(ToolEnvConfig):
    """Settings of ``SearchEnv``: everything of ``ToolEnvConfig`` plus search and data options."""

    max_turns: int = 6
    """Actions per episode (the built-in world needs up to 4 searches and an answer)."""
    top_k: int = 3
    """Passages returned per search (Search-R1 uses 3)."""
    max_passage_chars: int = 1000
    """Each passage's text is cut to this many characters before rendering."""
    reward: RewardConfig = field(default_factory=lambda: RewardConfig(costly_tools=("search",)))
    """Reward weights, penalties and costs; ``search_cost`` is charged per ``search`` call."""
    retriever: RetrieverConfig | None = None
    """The backend to search. None: the built-in world's index, built on demand and cached."""
    world: WorldConfig = field(default_factory=WorldConfig)
    """The built-in world used for tasks (and the corpus when ``retriever`` is None)."""
    world_backend: Literal["lucene", "bm25s", "dense"] = "lucene"
    """Backend of the built-in world's index when ``retriever`` is None."""
    split: Literal["train", "test"] = "train"
    """Which split of the world's questions (or of ``tasks_path``) the environment draws from."""
    tasks_path: str | None = None
    """Search-R1 parquet/JSONL file or folder to draw tasks from instead of the built-in world."""
    judge: bool = False
    """Offer the ReSeek-style ``judge`` tool (is the evidence sufficient?)."""
    judge_reward: float = 0.1
    """Reward per right judgement, charged per wrong one (``reward/judge``, final step)."""
    goal: bool = False
    """Offer the RE-Searcher-style ``goal`` tool (state an explicit search goal)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top_k < 1:
            raise ConfigError(f"SearchEnvConfig.top_k must be >= 1, got {self.top_k}")
        if self.max_passage_chars < 16:
            raise ConfigError(f"SearchEnvConfig.max_passage_chars must be >= 16, got {self.max_passage_chars}")
        if isinstance(self.retriever, dict):
            self.retriever = from_dict(RetrieverConfig, self.retriever, where="SearchEnvConfig.retriever")
        if isinstance(self.world, dict):
            self.world = from_dict(WorldConfig, self.world, where="SearchEnvConfig.world")


def render_passages(hits: list[Hit], max_chars: int) -> str:
    """Search-R1's passage list: ``Doc i(Title: T) text`` lines."""
    return "\n".join(
        f"Doc {i}(Title: {h.title}) {h.text[:max_chars]}" for i, h in enumerate(hits, 1)
    )


def open_search_backend(config: SearchEnvConfig) -> Retriever:
    """The configured retriever, or the built-in world's index (built if missing)."""
    if config.retriever is not None:
        return make_retriever(config.retriever)
    from creditgym.envs.defaults import ensure_world_index

    built = ensure_world_index(config.world, config.world_backend)
    return make_retriever(RetrieverConfig(backend=config.world_backend, index=str(built.index)))


def default_tasks(config: SearchEnvConfig) -> list[Task]:
    """The tasks ``config`` names: a Search-R1 file's split, else the world's questions."""
    if config.tasks_path is not None:
        from creditgym.envs.loaders import load_searchr1_tasks

        return load_searchr1_tasks(config.tasks_path, split=config.split)
    from creditgym.envs.world import World

    return World.generate(config.world).questions(config.split)


def search_config(
    config: SearchEnvConfig | dict | None, options: dict[str, Any],
) -> SearchEnvConfig:
    """``config`` (a ``SearchEnvConfig`` or its mapping) with ``options`` set on top (strict)."""
    if isinstance(config, SearchEnvConfig):
        return dataclasses.replace(config, **options) if options else config
    return from_dict(SearchEnvConfig, {**(config or {}), **options})


class SearchEnv(ToolEnv):
    """Answer questions by searching; see the module docstring.

    ``retriever`` (an open backend, shared between environments, or a ``RetrieverConfig``) and
    ``tasks`` override what ``config`` would build; pass one open retriever to many environments
    so their searches batch. ``gymnasium.make`` deep-copies its keyword arguments, so through it
    pass a ``RetrieverConfig`` (or nothing, for the built-in world), not an open retriever.
    """

    def __init__(
        self,
        config: SearchEnvConfig | dict | None = None,
        *,
        retriever: Retriever | RetrieverConfig | dict | None = None,
        tasks: Sequence[Task | dict] | None = None,
        render_mode: str | None = None,
        **options: Any,
    ) -> None:
        if isinstance(retriever, (RetrieverConfig, dict)):
            options["retriever"], retriever = retriever, None
        config = search_config(config, options)
        owns_retriever = retriever is None
        if retriever is None:
            retriever = BatchingRetriever(open_search_backend(config))
        self.retriever = retriever
        self._owns_retriever = owns_retriever
        self._evidence: list[str] = []
        self._judgements: list[bool] = []
        self._goals = 0
        super().__init__(
            self._make_tools(config),
            tasks=default_tasks(config) if tasks is None else tasks,
            config=config,
            render_mode=render_mode,
        )

    def _make_tools(self, config: SearchEnvConfig) -> list[Tool]:
        def search(query: str) -> str:
            """Search the encyclopedia; returns the most relevant passages with their titles.

            Args:
                query: What to look for, e.g. an entity's name.
            """
            if not query.strip():
                raise ValueError("the search query is empty; write what to look for")
            hits = self.retriever.search([query], config.top_k)[0]
            self._evidence.extend(f"{h.title} {h.text}" for h in hits)
            return render_passages(hits, config.max_passage_chars)

        def judge(verdict: Literal["sufficient", "insufficient"]) -> str:
            """State whether the information found so far suffices to answer the question.

            Args:
                verdict: "sufficient" or "insufficient".
            """
            self._judgements.append((verdict == "sufficient") == self._evidence_has_answer())
            return f"Judgement noted: {verdict}."

        def goal(goal: str) -> str:
            """State what the next searches should find out.

            Args:
                goal: The information you are looking for next.
            """
            self._goals += 1
            return f"Goal noted: {goal}"

        tools = [Tool.from_function(search)]
        if config.judge:
            tools.append(Tool.from_function(judge))
        if config.goal:
            tools.append(Tool.from_function(goal))
        return tools

    def _evidence_has_answer(self) -> bool:
        evidence = normalize_answer(" ".join(self._evidence))
        task = self.task
        return task is not None and any(
            (g := normalize_answer(a)) and f" {g} " in f" {evidence} " for a in task.golden_answers
        )

    # ------------------------------------------------------------------ contract

    config_class = SearchEnvConfig

    @classmethod
    def make_factory(cls, **kwargs: Any) -> Callable[[], SearchEnv]:
        """Environments sharing one retriever and one task list, opened with the first one;
        closing an environment never closes the retriever (the factory's ``close`` does)."""
        shared: dict[str, Any] = {}

        def make_search_env() -> SearchEnv:
            if shared:
                return cls(**{**kwargs, "retriever": shared["retriever"], "tasks": shared["tasks"]})
            env = cls(**kwargs)
            # The retriever belongs to the factory: a rollout closing its environments must not
            # close the index every later environment searches.
            shared.update(retriever=env.retriever, tasks=env.tasks, owned=env._owns_retriever)
            env._owns_retriever = False
            return env

        def close() -> None:
            if shared.get("owned"):
                shared["retriever"].close()

        make_search_env.close = close  # type: ignore[attr-defined]
        return make_search_env

    @classmethod
    def check_kwargs(cls, kwargs: dict[str, Any]) -> None:
        """Strict: every option must be a ``SearchEnvConfig`` field (nothing is opened)."""
        options = {k: v for k, v in kwargs.items() if k not in ("config", "tasks", "render_mode")}
        if isinstance(options.get("retriever"), Retriever):
            options.pop("retriever")
        try:
            search_config(kwargs.get("config"), options)
        except TypeError as exc:  # dataclasses.replace on a SearchEnvConfig: unknown field
            raise ConfigError(f"SearchEnvConfig: {exc}") from exc

    @classmethod
    def aggregate_metrics(cls, episodes: list[dict[str, Any]]) -> dict[str, float]:
        """The means, with ``success``, ``em``, ``f1`` and ``searches`` (``calls/search``)
        always present."""
        out = super().aggregate_metrics(episodes)
        out["searches"] = out.get("calls/search", 0.0)
        for key in ("success", "em", "f1"):
            out.setdefault(key, 0.0)
        return out

    @classmethod
    def demonstrations(cls, env_kwargs: dict[str, Any], *, count: int, seed: int,
                       options: dict[str, Any]):
        """The built-in world's scripted expert (``creditgym.envs.world.expert``); None over a
        Search-R1 task file, whose questions have no chain to follow. Options: ``worlds``,
        ``backend``, ``early_answer_prob``, ``skip_search_prob``, ``perfect``."""
        from creditgym.envs.world.expert import world_demonstrations

        return world_demonstrations(cls, env_kwargs, count=count, seed=seed, options=options)

    @classmethod
    def corpus_texts(cls, env_kwargs: dict[str, Any], *,
                     demonstrator: dict[str, Any]) -> list[str] | None:
        """The documents and training questions of the world and the demonstrator's worlds."""
        from creditgym.envs.world.expert import world_corpus_texts

        return world_corpus_texts(cls, env_kwargs, demonstrator=demonstrator)

    @classmethod
    def turn_labels(cls, trajectory: Any) -> list[str] | None:
        """The built-in world's ground truth (``creditgym.envs.world.labels``): a search that
        retrieved a new chain document or a right answer is useful, a turn ending the episode
        wrong harmful, the rest wasted; None for tasks without a chain (Search-R1 files)."""
        from creditgym.envs.world.labels import world_turn_labels

        return world_turn_labels(trajectory)

    # ------------------------------------------------------------------ hooks

    def system_prompt(self, task: Task) -> str:
        if self.config.syntax == "json":
            return super().system_prompt(task)
        lines = [
            "Answer the question. Think inside <think> and </think> whenever you get new "
            "information. If you lack knowledge, search by writing <search> query </search>; the "
            "top results come back between <information> and </information>. Search as often as "
            "you need."
        ]
        if self.config.judge:
            lines.append(
                "Before answering, judge the evidence with <judge>sufficient</judge> or "
                "<judge>insufficient</judge>."
            )
        if self.config.goal:
            lines.append("Before searching, you may state your goal with <goal> what to find </goal>.")
        lines.append(
            "When you know the answer, give it inside <answer> and </answer> without explanation, "
            "for example <answer> Velmora </answer>."
        )
        return " ".join(lines)

    def render_tool_result(self, name: str, result: ToolResult) -> str:
        if name == "search" and result.ok:
            block = f"<information>{result.value}</information>"
            return f"\n\n{block}\n\n" if self.config.syntax == "xml" else block
        return super().render_tool_result(name, result)

    def reward(self, task: Task, answer: str | None) -> dict[str, float]:
        metrics = super().reward(task, answer)
        if self.config.judge:
            right = sum(self._judgements)
            metrics["judgements"] = float(len(self._judgements))
            metrics["reward/judge"] = self.config.judge_reward * (2 * right - len(self._judgements))
        if self.config.goal:
            metrics["goals"] = float(self._goals)
        return metrics

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._evidence, self._judgements, self._goals = [], [], 0
        return super().reset(seed=seed, options=options)

    def close(self) -> None:
        if self._owns_retriever:
            self.retriever.close()
        super().close()
