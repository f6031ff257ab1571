"""Lazy public names for a package: ``__all__`` resolved on first use, so importing a package
loads none of the heavy libraries (torch, transformers, vLLM) its modules need.

In a package's ``__init__``: ``__all__, __getattr__, __dir__ = lazy_exports(__name__,
{"package.module": ("Name", ...), ...})``.
A public name must not also be a submodule's name: ``import package.name`` would rebind it.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, modules: dict[str, tuple[str, ...]]
                 ) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` of ``package`` exporting, from each module
    of ``modules``, the names listed for it."""
    exports = {name: module for module, names in modules.items() for name in names}
    if len(exports) != sum(map(len, modules.values())):
        raise ValueError(f"{package}: a public name is listed under two modules")

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(exports))

    return sorted(exports), __getattr__, __dir__
