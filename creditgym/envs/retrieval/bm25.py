"""In-process BM25 with bm25s: no JVM, a sparse score matrix in numpy, batched search.

The analyzer follows Lucene's ``EnglishAnalyzer`` (what pyserini's default index uses) closely
enough that the two backends rank alike: lowercase, possessive ``'s`` removed, split into word
characters (single letters and numbers kept), Lucene's 33 English stopwords (bm25s ships the same
list) and the Porter stemmer when PyStemmer is installed (it needs no downloads; without it no
stemming happens, and an index records which it used). Scoring is bm25s' ``lucene`` variant:
``idf = ln(1 + (N - df + 0.5) / (df + 0.5))`` times ``tf / (tf + k1 (1 - b + b dl / avgdl))``.
Lucene stores document lengths lossily, so scores agree to about two digits, not bit for bit.

bm25s tokenizes and precomputes the (term, document) weights; search is done here, exactly, over
those posting lists with MaxScore pruning (a query with one rare term touches only that term's
few documents, however common its other terms), falling back to scoring every matching document
when pruning cannot help. Ties rank the lower document index first, as Lucene does, and a query's
hits never depend on the other queries of its batch.

**k1 and b are fixed when the index is built**: bm25s precomputes every (term, document) weight.
``build_bm25s_index(..., k1=0.9, b=0.4)`` (pyserini's defaults) sets them; ``BM25sRetriever``
reads them from the index, and asking it for other values is a ``ConfigError`` that says to
rebuild. Documents that match no query term are never returned (as in Lucene), so a query can get
fewer than ``k`` hits.

Index layout (a directory, written to a temporary sibling and renamed into place, so a crash
never leaves a half-built index that looks complete): bm25s' own files (``params.index.json``,
the CSC arrays, ``vocab.index.json``), the tokenizer's vocabulary, ``docs.jsonl`` (one
``{"id", "contents"}`` per document, in index order) and ``creditgym_bm25s.json`` (format
version, analyzer settings, document count).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from creditgym.envs.retrieval.base import Hit, iter_corpus, parse_contents
from creditgym.envs.retrieval.query_text import normalize_queries
from creditgym.errors import ConfigError, RetrievalError

META_FILE = "creditgym_bm25s.json"
"""The file that marks a directory as a creditgym bm25s index."""
DOCS_FILE = "docs.jsonl"
FORMAT = 1

_WORD = re.compile(r"\w+")
_POSSESSIVE = re.compile(r"['\u2019][sS]\b")


def _split(text: str) -> list[str]:
    """Lucene-like word split of lowercased text: drop possessive 's, keep runs of \\w."""
    return _WORD.findall(_POSSESSIVE.sub("", text))


def _porter() -> Callable[[str], str] | None:
    """PyStemmer's Porter stemmer (Lucene's PorterStemFilter algorithm), or None."""
    try:
        import Stemmer  # PyStemmer
    except ImportError:
        return None
    return Stemmer.Stemmer("porter")


def _bm25s():
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import
    return bm25s


def _tokenizer(stemmer: Any):
    from bm25s.tokenization import Tokenizer

    return Tokenizer(lower=True, splitter=_split, stopwords="en", stemmer=stemmer)


def is_bm25s_index(path: str | Path) -> bool:
    """Whether ``path`` is an index written by :func:`build_bm25s_index`."""
    return (Path(path) / META_FILE).is_file()


def build_bm25s_index(
    corpus: str | Path,
    index_dir: str | Path,
    *,
    k1: float = 0.9,
    b: float = 0.4,
    stem: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Index the wiki-18 JSONL file ``corpus`` into the directory ``index_dir``.

    ``k1``/``b`` are baked into the index (see the module docstring). ``stem``: None uses the
    Porter stemmer when PyStemmer is installed; True requires it; False never stems. An existing
    ``index_dir`` is an error unless ``overwrite``. Returns ``index_dir``.
    """
    index_dir = Path(index_dir)
    if index_dir.exists() and not overwrite:
        raise RetrievalError(
            f"index directory {index_dir} already exists; pass overwrite=True to rebuild it"
        )
    stemmer = _porter() if stem in (None, True) else None
    if stem is True and stemmer is None:
        raise RetrievalError("stem=True needs PyStemmer: `pip install PyStemmer`")
    ids: list[str] = []
    contents: list[str] = []
    for docid, text in iter_corpus(corpus):
        ids.append(docid)
        contents.append(text)
    if not ids:
        raise RetrievalError(f"corpus {corpus} has no documents to index")

    bm25s = _bm25s()
    tokenizer = _tokenizer(stemmer)
    tokens = tokenizer.tokenize(contents, update_vocab=True, return_as="tuple", show_progress=False)
    model = bm25s.BM25(k1=k1, b=b, method="lucene")
    model.index(tokens, show_progress=False)

    index_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{index_dir.name}.", dir=index_dir.parent))
    try:
        model.save(tmp, show_progress=False)
        tokenizer.save_vocab(tmp)
        tokenizer.save_stopwords(tmp)
        with (tmp / DOCS_FILE).open("w", encoding="utf-8") as f:
            for docid, text in zip(ids, contents):
                f.write(json.dumps({"id": docid, "contents": text}, ensure_ascii=False) + "\n")
        meta = {
            "format": FORMAT,
            "backend": "bm25s",
            "documents": len(ids),
            "k1": k1,
            "b": b,
            "stemmer": "porter" if stemmer is not None else None,
            "stopwords": "lucene-english",
            "source": str(corpus),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        if index_dir.exists():
            shutil.rmtree(index_dir)
        os.replace(tmp, index_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return index_dir


class BM25sRetriever:
    """BM25 over a :func:`build_bm25s_index` directory, in process, batched.

    ``k1``/``b``: None takes the index's values; any other value must equal them (bm25s fixes
    them at build time). Each query is scored exactly over the posting lists with MaxScore
    pruning (see ``_top_k_one``), so a query with one rare term costs little however common its
    other terms are. ``search`` is thread-safe.
    """

    def __init__(
        self,
        index_dir: str | Path,
        *,
        k1: float | None = None,
        b: float | None = None,
    ) -> None:
        self.index_dir = Path(index_dir)
        if not is_bm25s_index(self.index_dir):
            raise RetrievalError(
                f"{self.index_dir} is not a bm25s index (no {META_FILE}); build one with "
                "creditgym.envs.retrieval.build_index('bm25s', corpus, index_dir)"
            )
        meta = json.loads((self.index_dir / META_FILE).read_text())
        if meta.get("format") != FORMAT:
            raise RetrievalError(
                f"{self.index_dir}: index format {meta.get('format')!r}, this version reads "
                f"{FORMAT}; rebuild the index"
            )
        for name, want in (("k1", k1), ("b", b)):
            if want is not None and abs(float(want) - float(meta[name])) > 1e-9:
                raise ConfigError(
                    f"bm25s index {self.index_dir} was built with {name}={meta[name]}, asked for "
                    f"{name}={want}; bm25s fixes k1/b at build time: rebuild with "
                    f"build_bm25s_index(..., {name}={want}) or leave {name} unset"
                )
        self.k1, self.b = float(meta["k1"]), float(meta["b"])
        stemmer = None
        if meta.get("stemmer"):
            stemmer = _porter()
            if stemmer is None:
                raise RetrievalError(
                    f"bm25s index {self.index_dir} was built with the Porter stemmer, which needs "
                    "PyStemmer: `pip install PyStemmer` (or rebuild the index with stem=False)"
                )
        bm25s = _bm25s()
        model = bm25s.BM25.load(self.index_dir, load_corpus=False, show_progress=False)
        n = int(model.scores["num_docs"])
        # bm25s keeps the weights as CSC (documents x terms): per term, the documents that hold
        # it (``indices``, ascending) and the term's BM25 weight in each (``data``).
        self._indptr = np.asarray(model.scores["indptr"], dtype=np.int64)
        self._docs = np.asarray(model.scores["indices"], dtype=np.int64)
        self._weights = np.asarray(model.scores["data"], dtype=np.float32)
        unsorted = np.diff(self._docs) <= 0  # binary search below needs ascending postings
        starts = self._indptr[1:-1]
        unsorted[starts[(starts > 0) & (starts <= len(unsorted))] - 1] = False
        if unsorted.any():
            where = np.searchsorted(self._indptr, np.flatnonzero(unsorted), "right") - 1
            for t in np.unique(where):
                lo, hi = self._indptr[t], self._indptr[t + 1]
                order = np.argsort(self._docs[lo:hi], kind="stable")
                self._docs[lo:hi] = self._docs[lo:hi][order]
                self._weights[lo:hi] = self._weights[lo:hi][order]
        nonempty = self._indptr[1:] > self._indptr[:-1]
        self._max_weight = np.zeros(len(self._indptr) - 1, dtype=np.float64)
        if nonempty.any():
            starts = self._indptr[:-1][nonempty]
            self._max_weight[nonempty] = np.maximum.reduceat(self._weights, starts)
        self._num_docs = n
        self._tokenizer = _tokenizer(stemmer)
        self._tokenizer.load_vocab(self.index_dir)
        self._tokenizer.load_stopwords(self.index_dir)
        self._lock = threading.Lock()  # the tokenizer caches stems in dicts
        self._ids: list[str] = []
        self._titles: list[str] = []
        self._texts: list[str] = []
        with (self.index_dir / DOCS_FILE).open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                title, text = parse_contents(row["contents"])
                self._ids.append(row["id"])
                self._titles.append(title)
                self._texts.append(text)
        self.num_documents = len(self._ids)
        self._empty_id = self._tokenizer.word_to_id.get("")
        self._closed = False

    def __len__(self) -> int:
        return self.num_documents

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Top-``k`` hits per query (fewer when fewer documents match), best first."""
        if self._closed:
            raise RetrievalError("BM25sRetriever is closed")
        queries = normalize_queries(queries)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not queries:
            return []
        kk = min(k, self.num_documents)
        with self._lock:
            ids = self._tokenizer.tokenize(
                queries, update_vocab=False, return_as="ids", show_progress=False
            )
        # a query with no known term matches nothing (bm25s would score the empty token)
        live = [i for i, q in enumerate(ids) if any(t != self._empty_id for t in q)]
        out: list[list[Hit]] = [[] for _ in queries]
        if not live:
            return out
        for i in live:
            docs, scores = self._top_k_one([t for t in ids[i] if t != self._empty_id], kk)
            out[i] = [
                Hit(self._ids[d], self._titles[d], self._texts[d], float(sc))
                for d, sc in zip(docs.tolist(), scores.tolist())
            ]
        return out

    def _top_k_one(self, term_ids: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` (documents, scores) of one query with MaxScore pruning.

        Terms are taken in order of their largest weight in any document (rare terms first).
        After each, the documents seen so far are scored in full; once the best score any
        unseen document could reach (the sum of the remaining terms' largest weights) is below
        the k-th best score, no unseen document can enter the top k and the search stops. A
        query of common terms only falls back to scoring every matching document. Scores are
        float32 sums taken in term-id order on either path, so a query's result never depends
        on the path or on the other queries of its batch.
        """
        tally: dict[int, int] = {}
        for t in term_ids:
            tally[t] = tally.get(t, 0) + 1
        keys = sorted(tally)
        terms = np.array(keys, dtype=np.int64)
        counts = np.array([tally[t] for t in keys], dtype=np.int64)
        indptr, postings = self._indptr, self._docs
        lengths = indptr[terms + 1] - indptr[terms]
        keep = lengths > 0
        terms, counts = terms[keep], counts[keep]
        if len(terms) == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        counts32 = counts.astype(np.float32)
        bound = self._max_weight[terms] * counts
        order = np.argsort(-bound, kind="stable")
        rest = np.concatenate([np.cumsum(bound[order][::-1])[::-1][1:], [0.0]])
        cand: np.ndarray | None = None
        scores: np.ndarray | None = None  # full scores of ``cand``, when computed
        limit = max(1024, self._num_docs // 64)
        for step, j in enumerate(order):
            t = terms[j]
            docs_t = postings[indptr[t] : indptr[t + 1]]
            scores = None
            if cand is None:
                cand = docs_t
            else:
                merged = np.concatenate((cand, docs_t))
                merged.sort(kind="stable")
                keep_first = np.empty(len(merged), dtype=bool)
                keep_first[0] = True
                np.not_equal(merged[1:], merged[:-1], out=keep_first[1:])
                cand = merged[keep_first]
            if len(cand) > limit:
                return self._dense_top_k(terms, counts32, k)
            if step + 1 < len(order) and len(cand) >= k:
                scores = self._score(cand, terms, counts32)
                kth = np.partition(scores, len(scores) - k)[len(scores) - k]
                if rest[step] * (1 + 1e-5) < kth:
                    break
        assert cand is not None
        if scores is None:
            scores = self._score(cand, terms, counts32)
        top = _top_k(scores, cand, k)
        return cand[top], scores[top]

    def _score(self, cand: np.ndarray, terms: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Full BM25 scores of the documents ``cand`` (ascending) for the query ``terms``."""
        scores = np.zeros(len(cand), dtype=np.float32)
        for t, c in zip(terms.tolist(), counts.tolist()):
            lo, hi = self._indptr[t], self._indptr[t + 1]
            docs_t = self._docs[lo:hi]
            pos = np.searchsorted(docs_t, cand)
            pos[pos == len(docs_t)] = 0
            hit = docs_t[pos] == cand
            scores[hit] += self._weights[lo:hi][pos[hit]] * np.float32(c)
        return scores

    def _dense_top_k(
        self, terms: np.ndarray, counts: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = np.zeros(self._num_docs, dtype=np.float32)
        for t, c in zip(terms.tolist(), counts.tolist()):
            lo, hi = self._indptr[t], self._indptr[t + 1]
            scores[self._docs[lo:hi]] += self._weights[lo:hi] * np.float32(c)
        matched = np.flatnonzero(scores > 0)
        top = _top_k(scores[matched], matched, k)
        return matched[top], scores[matched][top]

    def close(self) -> None:
        """Drop the index from memory."""
        self._closed = True
        self._docs = self._weights = self._max_weight = None  # type: ignore[assignment]
        self._ids, self._titles, self._texts = [], [], []

    def __enter__(self) -> BM25sRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _top_k(scores: np.ndarray, docs: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best ``scores``, best first, ties broken by lower document index
    (Lucene's order), deterministic whatever the batch."""
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        cand = np.flatnonzero(scores >= scores[part].min())
    else:
        cand = np.arange(len(scores))
    order = np.lexsort((docs[cand], -scores[cand]))[:k]
    return cand[order]


def index_size_bytes(path: str | Path) -> int:
    """Total size of the files under ``path``."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


__all__ = ["BM25sRetriever", "build_bm25s_index", "index_size_bytes", "is_bm25s_index"]
