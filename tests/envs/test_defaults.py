"""The built-in world's cache: built once, however many processes or threads ask for it at once
(the ranks of one job share it), and reused afterwards."""

from __future__ import annotations

import threading

import creditgym.envs.retrieval as retrieval
from creditgym.envs.defaults import ensure_world_index
from creditgym.envs.retrieval import RetrieverConfig, make_retriever
from creditgym.envs.world import World, WorldConfig


def test_concurrent_callers_build_the_corpus_and_index_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDITGYM_CACHE", str(tmp_path))
    config = WorldConfig(seed=11, num_documents=200, num_train_questions=20, num_test_questions=5)
    builds, corpora = [], []
    real_build, real_write = retrieval.build_index, World.write_corpus
    start = threading.Barrier(4)

    def build(*args, **kwargs):
        builds.append(args)
        return real_build(*args, **kwargs)

    def write(self, path, **kwargs):
        corpora.append(path)
        return real_write(self, path, **kwargs)

    monkeypatch.setattr(retrieval, "build_index", build)
    monkeypatch.setattr(World, "write_corpus", write)
    results, errors = [], []

    def ask():
        start.wait()
        try:
            results.append(ensure_world_index(config, "bm25s"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 4
    assert len(builds) == 1 and len(corpora) == 1  # the others waited, then used it
    assert len({str(r.index) for r in results}) == 1
    world = results[0].world
    title = world.title("7")
    hits = make_retriever(RetrieverConfig(backend="bm25s", index=str(results[0].index))).search(
        [title], 1)[0]
    assert hits and hits[0].title == title
    # later callers find it built
    assert ensure_world_index(config, "bm25s").index == results[0].index and len(builds) == 1


def test_small_worlds_are_generated_once_and_large_ones_every_time():
    small = WorldConfig(seed=3, num_documents=150, num_train_questions=10, num_test_questions=5)
    assert World.generate(small) is World.generate(small)
    assert World.generate(small).contents() == [d["contents"] for d in World.generate(small)
                                                 .iter_documents()]
    from creditgym.envs.world import world as world_module

    big = WorldConfig(seed=3, num_documents=world_module.MEMO_DOCUMENTS + 1)
    assert World.generate(big) is not World.generate(big)
