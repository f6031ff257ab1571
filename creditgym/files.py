"""Writing files so that nothing already written is lost: the one atomic writer of the project.

- :func:`atomic_writer`: a context manager yielding a file object on a hidden temporary file next
  to the target; on a clean exit the data is flushed, fsynced and renamed over the target (atomic
  on POSIX), then the directory is fsynced. On any exception (or a kill) the target is untouched
  and the temporary file is removed (a kill can leave a ``.<name>.*.tmp`` file, never a torn
  target).
- :func:`atomic_write_text` / :func:`atomic_write_bytes`: the same for data already in memory.
- :func:`atomic_dir`: the same for a folder (a model folder): filled in a hidden staging folder
  beside the target, fsynced, then swapped in; an old target is removed only after the swap.
- :func:`check_output`: the guard every file-writing command calls first: the output must not be
  one of the command's inputs (compared after resolving symlinks, ``./`` and hard links), and an
  existing output is only replaced with ``force``. The error names the path and the flag.
  :func:`check_output_dir` is the same for commands that fill a folder (``world``, ``index``):
  no input may be the folder or lie inside it, and a non-empty folder needs ``force``.
- :func:`replace_surrogates`: text outputs (HTML, terminals, parquet) cannot hold a lone surrogate
  (``"\\ud800"``, which JSON can carry), so they show it as U+FFFD; JSON outputs keep it exactly
  as an escape (``json.dumps(..., ensure_ascii=True)``), see :func:`json_line`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from creditgym.errors import OutputPathError


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry (a rename inside it) to disk; a no-op where directories can't be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8", **open_kwargs: Any
) -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file renamed into place only if the block succeeds."""
    target = Path(path)
    if "b" in mode:
        encoding = None
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, mode, encoding=encoding, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent if str(target.parent) else ".")


def atomic_write_text(
    path: str | os.PathLike, text: str, *, encoding: str = "utf-8", errors: str = "strict"
) -> None:
    """Replace ``path`` with ``text`` atomically (encoding errors raise before anything changes)."""
    data = text.encode(encoding, errors)
    atomic_write_bytes(path, data)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden staging folder beside ``path``; on a clean exit its files are
    fsynced and it replaces ``path`` (an old ``path`` is moved aside first and removed after
    the swap); on an exception it is removed and ``path`` is untouched."""
    out = Path(path).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        yield staging
        for f in staging.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(staging)
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / out.name)
            os.replace(staging, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_writer(path, "wb") as f:
        f.write(data)


def write_png(fig: Any, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Save a matplotlib figure as a PNG at ``path`` atomically, then close the figure (also
    when saving fails, so repeated plots do not accumulate figures)."""
    import matplotlib.pyplot as plt

    try:
        with atomic_writer(path, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)


_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_surrogates(text: str) -> str:
    """``text`` with every lone surrogate (not encodable as UTF-8) replaced by U+FFFD.

    Python joins valid surrogate pairs when it decodes JSON, so any surrogate left in a ``str``
    is a lone one.
    """
    return _SURROGATE.sub("\ufffd", text)


def scrub_surrogates(value: Any) -> Any:
    """``value`` with :func:`replace_surrogates` applied to every string in nested lists/dicts."""
    if isinstance(value, str):
        return replace_surrogates(value)
    if isinstance(value, dict):
        return {scrub_surrogates(k): scrub_surrogates(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_surrogates(v) for v in value]
    return value


def json_line(record: Any, **dumps_kwargs: Any) -> str:
    """``record`` as JSON text, readable UTF-8 where possible: ``ensure_ascii=False``, except
    that a record holding a lone surrogate is escaped (``ensure_ascii=True``), which keeps it
    exactly (``json.loads`` gives the same string back) and always encodes."""
    text = json.dumps(record, ensure_ascii=False, **dumps_kwargs)
    if _SURROGATE.search(text):
        text = json.dumps(record, ensure_ascii=True, **dumps_kwargs)
    return text


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output(
    output: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    *,
    force: bool = False,
    flag: str = "--force",
) -> Path:
    """Refuse an output that is one of ``inputs`` or that exists without ``force``; returns it.

    Raises :class:`~creditgym.errors.OutputPathError` naming the path and what to do.
    """
    out = Path(output)
    for source in inputs:
        src = Path(source)
        if (out.exists() and src.exists() and _same_file(out, src)) or (
            out.resolve() == src.resolve()
        ):
            raise OutputPathError(
                f"output {str(out)!r} is the input {str(src)!r}: writing it would destroy the "
                "input; choose another output path"
            )
    if out.is_dir():
        raise OutputPathError(f"output {str(out)!r} is a directory; give a file path")
    if out.exists() and not force:
        raise OutputPathError(
            f"output {str(out)!r} already exists; pass {flag} to replace it (the old file stays "
            "intact until the new one is complete)"
        )
    if not out.parent.exists():
        raise OutputPathError(
            f"the folder of output {str(out)!r} does not exist; create {str(out.parent)!r} first"
        )
    return out


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def check_output_dir(
    output: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    *,
    force: bool = False,
    flag: str = "--force",
) -> Path:
    """Refuse an output folder that is, or holds, one of ``inputs``, or that is a file, or that
    is not empty without ``force``; returns it."""
    out = Path(output)
    for source in inputs:
        src = Path(source)
        if _inside(src, out) or (out.exists() and src.exists() and _same_file(out, src)):
            raise OutputPathError(
                f"output folder {str(out)!r} holds the input {str(src)!r}: replacing the folder "
                "would destroy the input; choose another output folder"
            )
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"output {str(out)!r} is a file, not a folder; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputPathError(
            f"output folder {str(out)!r} is not empty; pass {flag} to replace what it holds"
        )
    return out


__all__ = [
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_writer",
    "check_output",
    "check_output_dir",
    "fsync_dir",
    "json_line",
    "replace_surrogates",
    "scrub_surrogates",
]
