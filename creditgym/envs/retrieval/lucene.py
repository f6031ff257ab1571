"""Lucene BM25 through pyserini: the default retrieval backend.

:func:`build_lucene_index` indexes a wiki-18 JSONL corpus with Anserini's ``IndexCollection``
(``JsonCollection`` + ``DefaultLuceneDocumentGenerator``, positions, doc vectors and the raw JSON
stored: the same index ``python -m pyserini.index.lucene`` builds), in-process in the JVM that
:func:`~creditgym.envs.retrieval.jvm.ensure_jvm` starts. :class:`LuceneRetriever` opens any Lucene
index directory: one built here, a pyserini prebuilt index, or Search-R1's wiki-18 BM25 index.

Builds are atomic: the index is written into a hidden temporary directory next to the target
and renamed into place only once Anserini has finished, so a killed or failed build never leaves
a half-written index that looks valid, and an existing index is untouched until the new one is
complete.

Any query text is answered without an exception. Queries are normalised first
(:mod:`~creditgym.envs.retrieval.query_text`: lone surrogates, which the JVM bridge cannot encode,
become U+FFFD). Anserini turns a query into one Lucene clause per distinct analysed term, and
Lucene refuses a query of more than ``IndexSearcher.getMaxClauseCount()`` clauses (1,024 by
default) with ``TooManyClauses``; in a batch that one refusal fails the whole batch. So a query
with more distinct terms than that is **cut just before its first term past the limit**: it is
searched as the prefix of its text that holds the first 1,024 distinct terms (repeats of those
terms after the cut no longer add to their weight). Queries no longer than the limit in
characters cannot reach it and are never analysed twice.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from creditgym.envs.retrieval.base import Hit, iter_corpus, parse_contents
from creditgym.envs.retrieval.jvm import ensure_jvm
from creditgym.envs.retrieval.query_text import normalize_queries
from creditgym.errors import CorpusFormatError, RetrievalError

log = logging.getLogger(__name__)

#: Search-R1's BM25 parameters (also pyserini's defaults).
DEFAULT_K1 = 0.9
DEFAULT_B = 0.4
#: Written into every index this module builds; Lucene ignores files it does not know.
META_FILE = "creditgym_index.json"


STEMMERS = ("porter", "krovetz", "none")
"""Stemmers Anserini offers at indexing time."""


def _index_stemmer(path: Path) -> str:
    """The stemmer an index was built with: from our metadata, else Anserini's default."""
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "porter"  # an index built elsewhere (pyserini prebuilt, Search-R1)
    stemmer = meta.get("stemmer", "porter")
    return stemmer if stemmer in STEMMERS else "porter"


def is_lucene_index(path: str | Path) -> bool:
    """True if ``path`` is a directory holding a committed Lucene index (a ``segments_N`` file)."""
    path = Path(path)
    return path.is_dir() and any(p.name.startswith("segments_") for p in path.iterdir())


def _count_lines(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            n += chunk.count(b"\n")
    return n


def _stage_input(corpus: Path, stage: Path) -> Path:
    """A directory holding only ``corpus``, under a name JsonCollection reads (``*.jsonl``)."""
    stage.mkdir(parents=True)
    name = "corpus.jsonl.gz" if corpus.name.endswith(".gz") else "corpus.jsonl"
    link = stage / name
    try:
        os.symlink(corpus.resolve(), link)
    except OSError:  # no symlinks (some filesystems, Windows): fall back to a copy
        shutil.copyfile(corpus, link)
    return stage


def build_lucene_index(
    corpus: str | Path,
    index_dir: str | Path,
    *,
    threads: int = 2,
    overwrite: bool = False,
    progress: bool | None = None,
    stemmer: str = "porter",
) -> Path:
    """Build a BM25 Lucene index of the wiki-18 JSONL ``corpus`` at ``index_dir``; return its path.

    ``corpus`` is a ``.jsonl`` (or ``.jsonl.gz``) file of ``{"id", "contents"}`` lines, or a
    directory of such files. An existing index is only replaced with ``overwrite=True``, and then
    only after the new one is complete. ``progress``: show a tqdm bar (``None``: only on a
    terminal). ``stemmer``: ``porter`` (Anserini's and Search-R1's default), ``krovetz`` or
    ``none``; it is recorded in the index and searches use the same analyzer. Raises :class:`CorpusFormatError` for a corpus that is not wiki-18 JSONL and
    :class:`RetrievalError` when Anserini fails or indexes nothing.
    """
    corpus = Path(corpus)
    index_dir = Path(index_dir)
    if stemmer not in STEMMERS:
        raise RetrievalError(f"stemmer {stemmer!r} is not one of {', '.join(STEMMERS)}")
    if not corpus.exists():
        raise CorpusFormatError(f"corpus {corpus} does not exist")
    if corpus.is_file() and not corpus.name.endswith(".gz"):
        # Fail fast, with a message naming the line, on a file that is not wiki-18 JSONL.
        rows = iter_corpus(corpus)
        next(rows, None)
        rows.close()
    if index_dir.exists() and (not index_dir.is_dir() or any(index_dir.iterdir())):
        if not overwrite:
            raise RetrievalError(
                f"{index_dir} already exists and is not empty; pass overwrite=True "
                "(--overwrite on the command line) to replace it"
            )
    ensure_jvm()
    from jnius import autoclass, detach  # type: ignore[import-not-found]

    index_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = index_dir.parent / f".{index_dir.name}.tmp-{tag}"
    stage = index_dir.parent / f".{index_dir.name}.input-{tag}"
    try:
        if corpus.is_file():
            input_dir = _stage_input(corpus, stage)
            total = None if corpus.name.endswith(".gz") else _count_lines(corpus)
        else:
            input_dir, total = corpus, None

        Args = autoclass("io.anserini.index.IndexCollection$Args")
        IndexCollection = autoclass("io.anserini.index.IndexCollection")
        args = Args()
        args.collectionClass = "JsonCollection"
        args.generatorClass = "DefaultLuceneDocumentGenerator"
        args.input = str(input_dir)
        args.index = str(tmp)
        args.threads = max(1, int(threads))
        args.storePositions = True
        args.storeDocvectors = True
        args.storeRaw = True
        args.stemmer = stemmer
        args.quiet = True  # our own progress bar and summary replace Anserini's log lines
        try:
            indexer = IndexCollection(args)
        except Exception as exc:  # JavaException
            raise RetrievalError(f"Anserini could not start indexing {corpus}: {exc}") from exc
        counters = indexer.getCounters()

        failure: list[BaseException] = []

        def run() -> None:
            try:
                indexer.run()
            except BaseException as exc:  # noqa: BLE001  # re-raised in the calling thread
                failure.append(exc)
            finally:
                detach()

        start = time.perf_counter()
        worker = threading.Thread(target=run, name="lucene-index", daemon=True)
        worker.start()
        from tqdm.auto import tqdm

        with tqdm(total=total, unit="doc", desc=f"lucene index {index_dir.name}",
                  disable=(None if progress is None else not progress)) as bar:
            while worker.is_alive():
                worker.join(0.5)
                done = counters.indexed.get() + counters.empty.get() + counters.unindexable.get()
                bar.update(done - bar.n)
        if failure:
            raise RetrievalError(f"Anserini failed indexing {corpus}: {failure[0]}") from failure[0]
        indexed = counters.indexed.get()
        bad = {
            "empty": counters.empty.get(),
            "unindexable": counters.unindexable.get(),
            "errors": counters.errors.get(),
        }
        if indexed == 0 or not is_lucene_index(tmp):
            raise RetrievalError(
                f"Anserini indexed no document from {corpus} ({bad}); is it wiki-18 JSONL "
                '({"id": ..., "contents": ...} per line)?'
            )
        if any(bad.values()):
            log.warning("indexing %s: %d documents indexed, skipped %s", corpus, indexed, bad)
        elapsed = time.perf_counter() - start
        meta = {
            "backend": "lucene",
            "corpus": str(corpus.resolve()),
            "num_docs": int(indexed),
            "stemmer": stemmer,
            "skipped": {k: int(v) for k, v in bad.items()},
            "seconds": round(elapsed, 3),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _swap_into_place(tmp, index_dir)
        log.info("indexed %d documents from %s into %s in %.1fs", indexed, corpus, index_dir,
                 elapsed)
        return index_dir
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished ``tmp`` to ``target``, replacing what was there only now."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def _hit_from_raw(docid: str, raw: str | None, contents: str | None, score: float) -> Hit:
    """A Hit from a stored document: raw JSON (wiki-18, BEIR-style) or plain contents."""
    text = raw if raw is not None else contents
    if text is None:
        return Hit(docid=docid, title="", text="", score=score)
    if text.lstrip().startswith("{"):
        try:
            obj: Any = json.loads(text)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            if "contents" in obj:
                title, body = parse_contents(str(obj["contents"]))
                return Hit(docid=docid, title=title, text=body, score=score)
            if "text" in obj:  # BEIR-style {"_id", "title", "text"}
                return Hit(docid=docid, title=str(obj.get("title") or ""), text=str(obj["text"]),
                           score=score)
    title, body = parse_contents(text)
    return Hit(docid=docid, title=title, text=body, score=score)


def _cut_before_term(analyzer: Any, query: str, limit: int) -> str:
    """The prefix of ``query`` that ends with the last token before its ``limit + 1``-th
    distinct term, as ``analyzer`` sees it."""
    from jnius import autoclass, cast  # type: ignore[import-not-found]

    attrs = "org.apache.lucene.analysis.tokenattributes."
    klass = autoclass("java.lang.Class")
    stream = analyzer.tokenStream("contents", query)
    try:
        term = cast(attrs + "CharTermAttribute",
                    stream.addAttribute(klass.forName(attrs + "CharTermAttribute")))
        offset = cast(attrs + "OffsetAttribute",
                      stream.addAttribute(klass.forName(attrs + "OffsetAttribute")))
        stream.reset()
        seen: set[str] = set()
        end = 0
        while stream.incrementToken():
            token = term.toString()
            if token not in seen:
                if len(seen) == limit:
                    break
                seen.add(token)
            end = offset.endOffset()
        stream.end()
    finally:
        stream.close()
    # Java offsets count UTF-16 code units; the query has no lone surrogate (normalised).
    return query.encode("utf-16-le")[: 2 * end].decode("utf-16-le")


class LuceneRetriever:
    """BM25 search over a Lucene index directory with pyserini (implements ``Retriever``).

    Queries are bags of words run through the index's analyzer (Anserini's default query
    generator): Lucene query syntax (``AND``, ``"``, ``:``, ``(``) has no special meaning and never
    raises. A query with no indexable term (empty, whitespace, only stopwords or punctuation)
    gets an empty hit list; lone surrogates are replaced and a query with more than
    ``max_clauses`` distinct terms is cut (see the module docstring). Safe to call from several
    threads.
    """

    def __init__(
        self,
        index_dir: str | Path,
        *,
        k1: float = DEFAULT_K1,
        b: float = DEFAULT_B,
        threads: int = 2,
    ) -> None:
        path = Path(index_dir)
        if not path.exists():
            raise RetrievalError(
                f"no Lucene index at {path}: the path does not exist (build one with "
                "`creditgym index` or creditgym.envs.retrieval.lucene.build_lucene_index)"
            )
        if not is_lucene_index(path):
            raise RetrievalError(
                f"{path} is not a Lucene index (no segments_N file in it); "
                "was its build interrupted?"
            )
        ensure_jvm()
        from pyserini.search.lucene import LuceneSearcher

        try:
            self._searcher = LuceneSearcher(str(path))
        except Exception as exc:  # JavaException: corrupt index, version mismatch
            raise RetrievalError(f"pyserini could not open the Lucene index at {path}: {exc}") \
                from exc
        self._searcher.set_bm25(float(k1), float(b))
        self.stemmer = _index_stemmer(path)
        from jnius import autoclass  # type: ignore[import-not-found]
        from pyserini.analysis import get_lucene_analyzer

        # The searcher's own analyzer is not reachable from Python: keep an equal one to count
        # and cut the terms of over-long queries.
        self._analyzer = get_lucene_analyzer(stemming=self.stemmer != "none",
                                             stemmer=self.stemmer)
        if self.stemmer != "porter":  # pyserini's searcher assumes Porter unless told
            self._searcher.set_analyzer(self._analyzer)
        self.max_clauses = int(
            autoclass("org.apache.lucene.search.IndexSearcher").getMaxClauseCount()
        )
        """Lucene's limit on clauses per query: queries keep at most this many distinct terms."""
        self.truncated_queries = 0
        """Queries cut to ``max_clauses`` distinct terms so far."""
        self.index_dir = path
        self.k1, self.b = float(k1), float(b)
        self.threads = max(1, int(threads))
        self.num_docs = int(self._searcher.num_docs)
        self._closed = False

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Top-``k`` BM25 hits for each query, best first, in the order of ``queries``."""
        if self._closed:
            raise RetrievalError(f"LuceneRetriever({self.index_dir}) is closed")
        queries = normalize_queries(queries)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not queries:
            return []
        queries = [self._fit_clause_limit(q) for q in queries]
        qids = [str(i) for i in range(len(queries))]
        threads = min(self.threads, len(queries))
        if len(queries) == 1:
            results = {"0": self._searcher.search(queries[0], int(k))}
        else:
            results = self._searcher.batch_search(queries, qids, int(k), threads)
        out: list[list[Hit]] = []
        for qid in qids:
            hits = []
            for h in results.get(qid, ()):
                doc = h.lucene_document
                raw = doc.get("raw") if doc is not None else None
                contents = doc.get("contents") if doc is not None and raw is None else None
                hits.append(_hit_from_raw(str(h.docid), raw, contents, float(h.score)))
            out.append(hits)
        return out

    def _fit_clause_limit(self, query: str) -> str:
        """``query``, or its longest prefix holding at most ``max_clauses`` distinct terms."""
        if len(query) <= self.max_clauses:  # every term takes at least one character
            return query
        from jnius import autoclass  # type: ignore[import-not-found]

        terms = autoclass("io.anserini.analysis.AnalyzerUtils").analyze(self._analyzer, query)
        if len(set(terms.toArray())) <= self.max_clauses:
            return query
        self.truncated_queries += 1
        return _cut_before_term(self._analyzer, query, self.max_clauses)

    def close(self) -> None:
        """Close the index; the retriever is unusable afterwards."""
        if not self._closed:
            self._closed = True
            self._searcher.close()

    def __enter__(self) -> "LuceneRetriever":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"LuceneRetriever({str(self.index_dir)!r}, k1={self.k1}, b={self.b}, "
                f"docs={self.num_docs})")
