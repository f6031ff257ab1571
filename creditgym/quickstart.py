"""The main job on the built-in default, for now: build the world and its index, then answer
held-out questions through retrieval by following each question's document chain.

Two searchers are compared on the same questions so the output says something about the world:
a one-shot searcher that searches the question text once, and a chain follower that searches each
hop's entity name in turn (what a good search agent learns to do). Multi-hop questions should need
the chain; that gap is what step-level credit assignment is for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from creditgym.envs.rewards import exact_match
from creditgym.envs.task import Task

TOP_K = 3


@dataclass
class Answered:
    """What a scripted searcher did on one question."""

    task: Task
    searches: int
    chain_docs_found: int
    answer: str
    one_shot_found: bool


def answer_by_chain(task: Task, retriever, k: int = TOP_K) -> Answered:
    """Follow the question's chain: search each hop's entity, read the hop's fact off the hit."""
    found, answer = 0, ""
    for hop in task.metadata["chain"]:
        hits = retriever.search([hop["query"]], k)[0]
        doc = next((h for h in hits if h.docid == hop["docid"]), None)
        if doc is None or hop["answer"] not in doc.text:
            answer = ""
            break
        found += 1
        answer = hop["answer"]
    one_shot = retriever.search([task.question], k)[0]
    final = task.golden_answers[0]
    return Answered(
        task=task,
        searches=len(task.metadata["chain"]),
        chain_docs_found=found,
        answer=answer,
        one_shot_found=any(final in h.text for h in one_shot),
    )


def run_quickstart(world_config, *, backend: str = "lucene", questions: int = 8) -> int:
    from creditgym.envs.defaults import ensure_world_index
    from creditgym.envs.retrieval import RetrieverConfig, make_retriever

    console = Console()
    t0 = time.perf_counter()
    with console.status(f"building the world ({world_config.num_documents} documents) and its {backend} index"):
        built = ensure_world_index(world_config, backend)
    console.print(f"world and {backend} index ready in {time.perf_counter() - t0:.1f}s: [bold]{built.index}[/]")

    tasks = _spread_over_hops(built.world.questions("test"), questions)
    retriever = make_retriever(RetrieverConfig(backend=backend, index=str(built.index)))
    try:
        t1 = time.perf_counter()
        results = [answer_by_chain(task, retriever) for task in tasks]
        elapsed = time.perf_counter() - t1
    finally:
        retriever.close()

    table = Table(title=f"held-out questions answered through {backend} (top-{TOP_K})")
    for col in ("hops", "question", "chain docs", "answer", "EM", "question-only search"):
        table.add_column(col)
    for r in results:
        em = exact_match(r.answer, r.task.golden_answers)
        table.add_row(
            str(r.task.metadata["hops"]), r.task.question, f"{r.chain_docs_found}/{r.searches}",
            r.answer or "-", f"{em:.0f}", "answer in hits" if r.one_shot_found else "missed",
        )
    console.print(table)
    n = max(len(results), 1)
    chain_em = sum(exact_match(r.answer, r.task.golden_answers) for r in results) / n
    one_shot = sum(r.one_shot_found for r in results) / n
    searches = sum(r.searches + 1 for r in results)
    console.print(
        f"chain following EM {chain_em:.2f}; question-only search finds the answer {one_shot:.2f}; "
        f"{searches} searches in {elapsed * 1000:.0f} ms"
    )
    return 0 if chain_em > 0 else 1


def _spread_over_hops(tasks: list[Task], n: int) -> list[Task]:
    """Pick ``n`` tasks round-robin over hop counts, so the demo shows every depth."""
    by_hops: dict[int, list[Task]] = {}
    for t in tasks:
        by_hops.setdefault(int(t.metadata["hops"]), []).append(t)
    picked: list[Task] = []
    while len(picked) < n and any(by_hops.values()):
        for hops in sorted(by_hops):
            if by_hops[hops] and len(picked) < n:
                picked.append(by_hops[hops].pop(0))
    return picked
