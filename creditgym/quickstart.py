"""The main job on the built-in default, for now: build the world and its index, then answer
held-out questions through ``SearchEnv`` with the scripted expert.

Two searchers are compared on the same questions so the output says something about the world:
a one-shot searcher that searches the question text once, and the expert that searches each
hop's entity in turn, reading the next entity off what it retrieved (what a good search agent
learns to do). Multi-hop questions need the chain; that gap is what step-level credit is for.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from creditgym.envs.task import Task

TOP_K = 3


def run_quickstart(world_config, *, backend: str = "lucene", questions: int = 8) -> int:
    from creditgym.envs.defaults import ensure_world_index
    from creditgym.envs.search_env import SearchEnv
    from creditgym.envs.world.expert import expert_action

    console = Console()
    t0 = time.perf_counter()
    with console.status(f"building the world ({world_config.num_documents} documents) and its {backend} index"):
        built = ensure_world_index(world_config, backend)
    console.print(f"world and {backend} index ready in {time.perf_counter() - t0:.1f}s: [bold]{built.index}[/]")

    env = SearchEnv(split="test", world=world_config, world_backend=backend, top_k=TOP_K)
    table = Table(title=f"held-out questions answered through SearchEnv ({backend}, top-{TOP_K})")
    for col in ("hops", "question", "searches", "answer", "EM", "question-only search"):
        table.add_column(col)
    ems, one_shot, t1 = [], [], time.perf_counter()
    try:
        for task in _spread_over_hops(env.tasks, questions):
            obs, _ = env.reset(options={"task": task})
            turn, done = 0, False
            while not done:
                obs, _, term, trunc, info = env.step(expert_action(task, turn, obs))
                turn, done = turn + 1, term or trunc
            hits = env.retriever.search([task.question], TOP_K)[0]
            found = any(task.golden_answers[0] in h.text for h in hits)
            m = info["metrics"]
            ems.append(m["em"])
            one_shot.append(found)
            table.add_row(str(task.metadata["hops"]), task.question, f"{m['calls/search']:.0f}",
                          info["answer"] or "-", f"{m['em']:.0f}", "answer in hits" if found else "missed")
        elapsed = time.perf_counter() - t1
    finally:
        env.close()
    console.print(table)
    n = max(len(ems), 1)
    console.print(
        f"expert EM {sum(ems) / n:.2f}; searching the question text once finds the answer "
        f"{sum(one_shot) / n:.2f} of the time; {len(ems)} episodes in {elapsed * 1000:.0f} ms"
    )
    return 0 if sum(ems) > 0 else 1


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
