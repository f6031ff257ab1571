"""What a trajectory file may make ``replay verify`` / ``rescore`` build: files are data, not code.

A record names its environment (``env_id``) and keyword arguments (``env_kwargs``), and replay
rebuilds that environment. A file from someone else must not choose what runs or what is read:

- ``env_id`` must be a gymnasium id registered by creditgym (``creditgym/Search-v0``, ...) or by
  a module the user allows (``--allow-module MOD``, imported because the user said so). The
  ``"module:Env-v0"`` form, with which ``gymnasium.make`` imports ``module``, is refused unless
  ``module`` is allowed, and so is a registered id whose entry point lies outside creditgym and
  the allowed modules.
- ``env_kwargs`` must name no external resource: keys that open one (``retriever``,
  ``tasks_path``, ``index``, ``url``, ``corpus``, ``*_path``, ``*_dir``, ``*_file``, ``*_url``)
  and string values that look like a path or URL (``://``, leading ``/``, ``~``, ``./``, ``../``)
  are refused unless the user passes ``--trust-file``, replaces them (``--retriever``,
  ``--tasks``), or sets them (``rescore --set``: ``trusted_paths``).

Every refusal is an :class:`~creditgym.errors.UntrustedFileError` naming the field (dotted, e.g.
``env_kwargs.retriever.url``) and the flag that would allow it; nothing has been imported,
opened or contacted by then.
"""

from __future__ import annotations

import copy
import importlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from creditgym.errors import UntrustedFileError

RESOURCE_KEYS = frozenset(
    {"retriever", "tasks_path", "index", "url", "corpus", "path", "encoder", "tokenizer", "model"}
)
"""Keyword names whose value opens something outside the record (a file, folder or server)."""
RESOURCE_SUFFIXES = ("_path", "_dir", "_file", "_url", "_index", "_corpus")
_PATH_LIKE = re.compile(r"^(~|/|\\|\./|\.\./|[A-Za-z]:[\\/])|://")


def _looks_external(key: str, value: Any) -> bool:
    if value is None or value is False:
        return False
    if key in RESOURCE_KEYS or key.endswith(RESOURCE_SUFFIXES):
        return not isinstance(value, dict | list)  # containers: their leaves are checked
    return isinstance(value, str) and bool(_PATH_LIKE.search(value))


def external_fields(value: Any, prefix: str = "env_kwargs") -> Iterator[str]:
    """Dotted names of the leaves of ``value`` that name a path or URL."""
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{prefix}.{key}"
            if _looks_external(str(key), item):
                yield name
            else:
                yield from external_fields(item, name)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from external_fields(item, f"{prefix}[{i}]")
    elif isinstance(value, str) and _PATH_LIKE.search(value):
        yield prefix


def leaf_paths(nested: Any, prefix: str = "env_kwargs") -> set[str]:
    """Dotted names of every leaf of a nested mapping (what an override sets)."""
    if isinstance(nested, dict):
        return set().union(*(leaf_paths(v, f"{prefix}.{k}") for k, v in nested.items())) | {prefix}
    return {prefix}


def _entry_module(spec: Any) -> str:
    entry = spec.entry_point
    if isinstance(entry, str):
        return entry.split(":")[0]
    return getattr(entry, "__module__", "") or ""


@dataclass
class EnvPolicy:
    """How far to trust a trajectory file's ``env_id`` / ``env_kwargs``; ``make_env`` builds
    an environment only within it (see the module docstring)."""

    allow_modules: tuple[str, ...] = ()
    """Modules the user allows to register environment ids (imported on first use)."""
    trust_file: bool = False
    """Follow the paths and URLs the file names (only for files you made yourself)."""
    retriever: dict[str, Any] | None = None
    """Replaces every ``retriever`` the records name (``--retriever``)."""
    tasks_path: str | None = None
    """Replaces every ``tasks_path`` the records name (``--tasks``)."""
    trusted_paths: set[str] = field(default_factory=set)
    """Dotted ``env_kwargs.*`` leaves the user set (``rescore --set``); never refused."""
    _allowed_ids: set[str] | None = field(default=None, repr=False)

    def allowed_ids(self) -> set[str]:
        """The gymnasium ids this policy lets a file name."""
        if self._allowed_ids is None:
            import gymnasium

            import creditgym.envs  # noqa: F401  (registers the built-in ids)

            before = set(gymnasium.registry)
            for name in self.allow_modules:
                try:
                    importlib.import_module(name)
                except ImportError as exc:
                    raise UntrustedFileError(
                        f"--allow-module {name}: cannot import it ({exc})"
                    ) from exc
            new = set(gymnasium.registry) - before
            roots = ("creditgym", *self.allow_modules)
            self._allowed_ids = new | {
                env_id
                for env_id, spec in gymnasium.registry.items()
                if any(
                    _entry_module(spec) == r or _entry_module(spec).startswith(r + ".")
                    for r in roots
                )
            }
        return self._allowed_ids

    def check_env_id(self, env_id: str, where: str = "") -> str:
        """The registered id to build for ``env_id``; raises when the policy refuses it."""
        at = f"{where}: " if where else ""
        if ":" in env_id:
            module, _, plain = env_id.partition(":")
            if module not in self.allow_modules:
                raise UntrustedFileError(
                    f"{at}env_id {env_id!r} would make gymnasium import module {module!r} named by "
                    f"the file; if you trust that module, pass --allow-module {module}"
                )
            env_id = plain
        if env_id not in self.allowed_ids():
            raise UntrustedFileError(
                f"{at}env_id {env_id!r} is not an environment registered by creditgym or by an "
                "allowed module; pass --allow-module MOD naming the module that registers it"
            )
        return env_id

    def apply(self, env_kwargs: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        """``env_kwargs`` with the user's replacements, and the dotted leaves they set."""
        kwargs, replaced = copy.deepcopy(env_kwargs), set()

        def visit(node: Any, prefix: str) -> None:
            if not isinstance(node, dict):
                return
            for key in list(node):
                name = f"{prefix}.{key}"
                if key == "retriever" and self.retriever is not None:
                    node[key] = copy.deepcopy(self.retriever)
                    replaced.update(leaf_paths(node[key], name))
                elif key == "tasks_path" and self.tasks_path is not None:
                    node[key] = self.tasks_path
                    replaced.add(name)
                else:
                    visit(node[key], name)

        visit(kwargs, "env_kwargs")
        return kwargs, replaced

    def check_kwargs(self, env_kwargs: dict[str, Any], where: str = "") -> dict[str, Any]:
        """``env_kwargs`` after the user's replacements; raises on a path or URL left in them."""
        kwargs, replaced = self.apply(env_kwargs)
        if self.trust_file:
            return kwargs
        trusted = replaced | self.trusted_paths
        for name in external_fields(kwargs):
            if name in trusted:
                continue
            flag = (
                "--retriever URL|INDEX_DIR"
                if ".retriever" in name
                else "--tasks PATH"
                if name.endswith(".tasks_path")
                else "--set KEY=VALUE (rescore)"
            )
            at = f"{where}: " if where else ""
            raise UntrustedFileError(
                f"{at}{name} names a path or URL chosen by the trajectory file, which replay does "
                f"not follow; replace it with {flag}, or pass --trust-file if you made this file"
            )
        return kwargs

    def make_env(self, env_id: str, env_kwargs: dict[str, Any]) -> Any:
        """``gymnasium.make`` of ``env_id`` with ``env_kwargs``, both checked first."""
        import gymnasium

        plain = self.check_env_id(env_id)
        kwargs = self.check_kwargs(env_kwargs)
        return gymnasium.make(plain, **kwargs)

    def check(self, records: Iterable[Any]) -> None:
        """Check every record's ``env_id`` / ``env_kwargs`` up front (records with no env id
        are skipped by replay anyway)."""
        for t in records:
            if getattr(t, "error", None) is None and t.env_id:
                where = f"trajectory {t.id!r}"
                self.check_env_id(t.env_id, where)
                self.check_kwargs(t.env_kwargs or {}, where)


def retriever_spec(text: str) -> dict[str, Any]:
    """``--retriever`` value: ``http(s)://...`` -> the HTTP backend, else an index folder whose
    backend is detected from its files."""
    if "://" in text:
        return {"backend": "http", "url": text}
    from creditgym.envs.retrieval import detect_backend

    return {"backend": detect_backend(text), "index": text}
