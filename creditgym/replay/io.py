"""Trajectory files on disk: an append-only JSONL writer that survives being killed, and readers.

A trajectory file holds one ``Trajectory.to_dict()`` JSON object per line
(``"schema": "creditgym.trajectory/1"``), so ``pandas.read_json(path, lines=True)`` and
``datasets.load_dataset("json", data_files=path)`` read it. Run metadata (model, sampling, env,
seeds, package versions) lives next to it in ``PATH.meta.json``, keeping the JSONL homogeneous.

Crash safety: each record is encoded first and written with one ``write`` of the whole line, then
flushed (and optionally fsync'd). JSON escapes newlines inside strings, so the only ``\\n`` byte of
a record is its last one: a run killed at any moment leaves complete lines followed by at most
one torn line without a newline. Readers skip a torn last line with a ``TornLineWarning`` naming
its line number; an unreadable line anywhere else is an error naming it. Reopening a file for
append moves a torn tail to ``PATH.torn-<line>`` (never destroying bytes) before writing on.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal, Self

from creditgym.files import atomic_write_text, atomic_writer, json_line
from creditgym.trajectory import Trajectory, TrajectoryFormatError

RUN_SCHEMA = "creditgym.run/1"
"""Schema tag of the ``PATH.meta.json`` sidecar."""

VERSIONED_PACKAGES = ("creditgym", "torch", "transformers", "gymnasium", "numpy", "vllm")
"""Packages whose installed versions ``run_metadata`` records (missing ones are skipped)."""

OnTorn = Literal["warn", "error", "ignore"]


class TornLineWarning(UserWarning):
    """The last line of a trajectory file is incomplete (a writer was killed mid-line)."""

    def __init__(self, path: Path, line: int, size: int, moved_to: Path | None = None) -> None:
        self.path, self.line, self.size, self.moved_to = Path(path), line, size, moved_to
        done = f"moved it to {moved_to}" if moved_to else "skipped it"
        super().__init__(
            f"{path}: line {line} is torn ({size} bytes without a closing newline, not valid "
            f"JSON), probably a writer killed mid-record; {done}; the lines before it are intact"
        )


def meta_path(path: str | Path) -> Path:
    """Where the run metadata of trajectory file ``path`` lives: ``PATH.meta.json``."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def run_metadata(**extra: Any) -> dict[str, Any]:
    """Facts about this run worth keeping with its trajectories: package versions, Python,
    host, time and command line, plus ``extra`` (model, sampling, env id and kwargs, seeds, ...)."""
    versions: dict[str, str] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            if name == "creditgym":  # running from a checkout that is not installed
                import creditgym

                versions[name] = creditgym.__version__
    return {
        "versions": versions,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "time": time.time(),
        "argv": list(sys.argv),
        **extra,
    }


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename, so readers see
    the old file or the new one, never half of one (lone surrogates are kept as escapes)."""
    atomic_write_text(path, json_line(data, indent=2, default=str) + "\n")


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """The sidecar of trajectory file ``path`` (``{"schema", "run", "resumed"}``), or None."""
    mp = meta_path(path)
    if not mp.is_file():
        return None
    with mp.open(encoding="utf-8") as f:
        return json.load(f)


def encode_line(trajectory: Trajectory | dict[str, Any]) -> bytes:
    """One record as a complete JSONL line (UTF-8, ends with its only newline). A record holding
    a lone surrogate (not encodable as UTF-8) is written with ASCII escapes, so it reads back
    exactly and never fails half-way."""
    record = trajectory.to_dict() if isinstance(trajectory, Trajectory) else trajectory
    return (json_line(record) + "\n").encode("utf-8")


class TrajectoryWriter:
    """Appends trajectories to a JSONL file, one whole line per record.

    ``metadata`` (see ``run_metadata``) goes to ``PATH.meta.json``; reopening an existing file
    resumes it: a torn tail is moved aside to ``PATH.torn-<line>`` with a warning, and the new
    metadata is appended to the sidecar's ``resumed`` list. ``fsync=True`` makes every record
    durable against power loss too (a killed process loses nothing flushed either way). Safe to
    share between threads.
    """

    def __init__(
        self, path: str | Path, metadata: dict[str, Any] | None = None, *, fsync: bool = False
    ) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.count = 0
        self.moved_tail: Path | None = None
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        resuming = self.path.exists() and self.path.stat().st_size > 0
        if resuming:
            self.moved_tail = repair_tail(self.path)
        self._write_metadata(metadata, resuming)
        # Unbuffered: a record reaches the file in the same call that writes it.
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed in close()

    def _write_metadata(self, metadata: dict[str, Any] | None, resuming: bool) -> None:
        if metadata is None:
            return
        existing = read_metadata(self.path) if resuming else None
        if existing is None:
            sidecar = {"schema": RUN_SCHEMA, "run": metadata, "resumed": []}
        else:
            sidecar = {**existing, "resumed": [*existing.get("resumed", []), metadata]}
        write_json_atomic(meta_path(self.path), sidecar)

    def write(self, trajectory: Trajectory | dict[str, Any]) -> None:
        """Append one record as one line and flush it to the file."""
        line = encode_line(trajectory)
        with self._lock:
            if self._file is None:
                raise ValueError(f"TrajectoryWriter for {self.path} is closed")
            view = memoryview(line)
            while view:  # os-level writes to regular files may in principle be partial
                view = view[self._file.write(view) :]
            if self.fsync:
                os.fsync(self._file.fileno())
            self.count += 1

    def write_many(self, trajectories: Iterable[Trajectory | dict[str, Any]]) -> None:
        """Append several records, each as its own line."""
        for t in trajectories:
            self.write(t)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repair_tail(path: str | Path) -> Path | None:
    """Make ``path`` end with a newline before appending to it.

    A last line without its newline that is a complete JSON record just gets the newline. Any
    other tail is moved to ``PATH.torn-<line>`` (the file is then cut back to its last complete
    line) and a ``TornLineWarning`` is issued; returns where the tail went, or None.
    """
    path = Path(path)
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return None
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return None
        start = _last_line_start(f, size)
        f.seek(start)
        tail = f.read()
        f.seek(0)
        line_no = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) + 1
        if _parses(tail):
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
            return None
        target = _free_name(path.with_name(f"{path.name}.torn-{line_no}"))
        with open(target, "wb") as out:
            out.write(tail)
            out.flush()
            os.fsync(out.fileno())
        f.truncate(start)
        f.flush()
        os.fsync(f.fileno())
    warnings.warn(TornLineWarning(path, line_no, len(tail), moved_to=target), stacklevel=3)
    return target


def _last_line_start(f, size: int) -> int:
    """Offset just after the last newline of the open file (0 when there is none)."""
    pos, block = size, 1 << 16
    while pos > 0:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        chunk = f.read(step)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return pos + i + 1
    return 0


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.{n}")
        n += 1
    return candidate


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def iter_records(path: str | Path, *, on_torn: OnTorn = "warn") -> Iterator[tuple[int, dict]]:
    """``(line number, JSON object)`` per non-blank line of ``path``, 1-based.

    A last line that lacks its newline and is not valid JSON is torn: ``on_torn="warn"`` skips
    it with a ``TornLineWarning``, ``"ignore"`` skips it silently, ``"error"`` raises
    ``TrajectoryFormatError``. Any other unreadable line raises ``TrajectoryFormatError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file {path} does not exist")
    with open(path, "rb") as f:
        # Binary line iteration splits on b"\n" only; str.splitlines would also split on
        # U+2028 and friends, which ensure_ascii=False leaves raw inside strings.
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as exc:
                if not raw.endswith(b"\n"):
                    if on_torn == "error":
                        raise TrajectoryFormatError(
                            str(TornLineWarning(path, number, len(raw)))
                        ) from exc
                    if on_torn == "warn":
                        warnings.warn(TornLineWarning(path, number, len(raw)), stacklevel=2)
                    return
                raise TrajectoryFormatError(
                    f"{path}: line {number} is not valid JSON ({exc}); only the last line of a "
                    "file may be torn, so this file was edited or corrupted; fix or delete that line"
                ) from exc
            if not isinstance(record, dict):
                raise TrajectoryFormatError(
                    f"{path}: line {number} holds a JSON {type(record).__name__}, not a trajectory object"
                )
            yield number, record


def iter_trajectories(path: str | Path, *, on_torn: OnTorn = "warn") -> Iterator[Trajectory]:
    """Trajectories of a JSONL file, lazily; see ``iter_records`` for torn and bad lines."""
    for number, record in iter_records(path, on_torn=on_torn):
        try:
            yield Trajectory.from_dict(record)
        except TrajectoryFormatError as exc:
            raise TrajectoryFormatError(f"{path}: line {number}: {exc}") from exc


def read_trajectories(path: str | Path, *, on_torn: OnTorn = "warn") -> list[Trajectory]:
    """All trajectories of a JSONL file; see ``iter_records`` for torn and bad lines."""
    return list(iter_trajectories(path, on_torn=on_torn))


def write_trajectories(
    path: str | Path,
    trajectories: Iterable[Trajectory],
    metadata: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a new trajectory file (refusing to replace one unless ``overwrite``).

    Atomic: records stream into a temporary file that replaces ``path`` only once all are
    written, so a failure leaves an existing file (and its sidecar) as they were. The sidecar is
    encoded before the data file is replaced and written right after it.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another output path or pass overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = None
    if metadata is not None:
        sidecar = json_line(
            {"schema": RUN_SCHEMA, "run": metadata, "resumed": []}, indent=2, default=str
        )
    with atomic_writer(path, "wb") as f:
        for t in trajectories:
            f.write(encode_line(t))
    if sidecar is None:
        meta_path(path).unlink(missing_ok=True)  # a stale sidecar would describe another run
    else:
        atomic_write_text(meta_path(path), sidecar + "\n")
    return path
