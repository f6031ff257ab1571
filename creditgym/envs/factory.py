"""Any environment from its id: resolve it, check its options, and build many of it cheaply.

An environment id is either a registered gymnasium id (``creditgym/Search-v0``,
``creditgym/KeyDoor-v0``, a user's ``gymnasium.register``-ed one) or ``"package.module:attr"``,
where ``attr`` is an environment class or a factory function (``**kwargs -> gymnasium.Env``),
imported on demand (the module must be importable: on ``PYTHONPATH``). gymnasium's
``"module:registered-id"`` form also works.

- ``resolve_env(env_id) -> (entry_point, kind)``: the class (``kind == "class"``) or function
  (``kind == "function"``) that makes the environment. Nothing is created. A bad id raises
  ``EnvSpecError`` naming the id, what was tried and the registered ids.
- ``check_env_kwargs(env_id, kwargs)``: ``EnvSpecError`` when the environment rejects its
  options (through the class's ``check_kwargs``, else by binding them to its signature), also
  before anything is created.
- ``env_factory(env_id, kwargs, wrappers=())``: a zero-argument callable that makes one more
  environment per call. A class with ``make_factory`` (every ``ToolEnv``) builds them: SearchEnv
  shares one retriever and task list, so 256 environments cost one index. ``wrappers``
  (gymnasium wrapper classes, ``"module:Wrapper"`` strings, or ``{"id": ..., "kwargs": {...}}``)
  wrap every environment, innermost first. The callable has ``close()`` (for shared resources;
  closing one environment never closes them).
Registered ids' own ``kwargs`` are the defaults under the given ones.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable

import gymnasium

from creditgym.envs.registration import BUILTIN_ENVS, register_envs
from creditgym.errors import ConfigError, EnvSpecError

SEARCH_ENV_ID = "creditgym/Search-v0"
"""The built-in world's id (kept for callers that name the default environment)."""

_THIRD_PARTY = ("gymnasium.", "ale_py", "shimmy", "minigrid", "mujoco")


def registered_ids() -> list[str]:
    """Registered ids that are not gymnasium's own examples (creditgym's, then users')."""
    register_envs()
    ids = []
    for env_id, spec in gymnasium.registry.items():
        entry = spec.entry_point
        where = entry if isinstance(entry, str) else getattr(entry, "__module__", "")
        if env_id.startswith("creditgym/") or not str(where).startswith(_THIRD_PARTY):
            ids.append(env_id)
    return sorted(ids, key=lambda i: (not i.startswith("creditgym/"), i))


def _fail(env_id: str, tried: list[str], hint: str = "") -> EnvSpecError:
    known = registered_ids()
    close = difflib.get_close_matches(env_id, known, n=1)
    return EnvSpecError(
        f"environment id {env_id!r} cannot be resolved. Tried: {'; '.join(tried)}. "
        + (f"Did you mean {close[0]!r}? " if close else "")
        + f"Registered ids: {', '.join(known) or '(none)'}. An id is a registered gymnasium id "
        "or 'package.module:ClassOrFunction' (with the package on PYTHONPATH)." + hint)


def _import(env_id: str, target: str, tried: list[str]) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - ImportError, or the module's own error at import
        tried.append(f"importing module {module_name!r} failed ({type(exc).__name__}: {exc})")
        raise _fail(env_id, tried) from exc
    if attr in gymnasium.registry and not hasattr(module, attr):
        return None  # gymnasium's "module:id": importing the module registered the id
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            tried.append(f"module {module_name!r} has no attribute {attr!r} (its environment "
                         f"classes and functions: {', '.join(_candidates(module)) or 'none'})")
            raise _fail(env_id, tried)
        obj = getattr(obj, part)
    return obj


def _candidates(module: Any) -> list[str]:
    """What in ``module`` could be meant: environment classes, functions defined there."""
    return sorted(
        name for name, value in vars(module).items() if not name.startswith("_") and (
            (inspect.isclass(value) and issubclass(value, gymnasium.Env))
            or (inspect.isfunction(value) and value.__module__ == module.__name__)))[:20]


def _kind(env_id: str, obj: Any, tried: list[str]) -> str:
    if inspect.isclass(obj):
        if not issubclass(obj, gymnasium.Env):
            tried.append(f"{obj.__module__}.{obj.__qualname__} is a class but not a gymnasium.Env")
            raise _fail(env_id, tried)
        return "class"
    if callable(obj):
        return "function"
    tried.append(f"{obj!r} is neither an environment class nor a function")
    raise _fail(env_id, tried)


def resolve_env(env_id: str) -> tuple[Any, str]:
    """The class or factory function behind ``env_id`` and its kind (``"class"``/``"function"``)."""
    if not isinstance(env_id, str) or not env_id.strip():
        raise EnvSpecError(f"environment id must be a non-empty string, got {env_id!r}; "
                           f"registered ids: {', '.join(registered_ids())}")
    register_envs()
    tried: list[str] = []
    if env_id not in gymnasium.registry:
        tried.append("looked it up in gymnasium's registry (not registered)")
        if ":" not in env_id:
            raise _fail(env_id, tried)
        obj = _import(env_id, env_id, tried)
        if obj is not None:
            return obj, _kind(env_id, obj, tried)
        env_id = env_id.partition(":")[2]
    entry = gymnasium.registry[env_id].entry_point
    tried.append(f"registered id {env_id!r} with entry point {entry!r}")
    if isinstance(entry, str):
        entry = _import(env_id, entry, tried)
    return entry, _kind(env_id, entry, tried)


def _spec_kwargs(env_id: str) -> dict[str, Any]:
    key = env_id.partition(":")[2] if env_id not in gymnasium.registry else env_id
    spec = gymnasium.registry.get(key)
    return dict(spec.kwargs) if spec is not None else {}


def check_env_kwargs(env_id: str, kwargs: dict[str, Any] | None) -> None:
    """``EnvSpecError`` unless ``env_id`` resolves and accepts ``kwargs`` (nothing is built)."""
    entry, kind = resolve_env(env_id)
    kwargs = {**_spec_kwargs(env_id), **(kwargs or {})}
    name = f"{entry.__module__}.{entry.__qualname__}"
    try:
        if hasattr(entry, "check_kwargs"):
            entry.check_kwargs(kwargs)
        else:
            params = inspect.signature(entry).parameters.values()
            if not any(p.kind is p.VAR_KEYWORD for p in params):
                inspect.signature(entry).bind(**kwargs)
    except (ConfigError, TypeError, ValueError) as exc:
        raise EnvSpecError(f"environment {env_id!r} ({name}) rejects its options "
                           f"{sorted(kwargs)}: {exc}") from exc


def _wrapper(spec: Any) -> tuple[Any, dict[str, Any]]:
    kwargs: dict[str, Any] = {}
    if isinstance(spec, dict):
        spec, kwargs = spec.get("id"), dict(spec.get("kwargs") or {})
    if isinstance(spec, str):
        if ":" not in spec:
            raise EnvSpecError(f"wrapper {spec!r} must be 'package.module:WrapperClass'")
        module_name, _, attr = spec.partition(":")
        try:
            spec = getattr(importlib.import_module(module_name), attr)
        except Exception as exc:  # noqa: BLE001
            raise EnvSpecError(f"wrapper {module_name}:{attr} cannot be imported "
                               f"({type(exc).__name__}: {exc})") from exc
    if not callable(spec):
        raise EnvSpecError(f"wrapper {spec!r} is not a gymnasium wrapper class")
    return spec, kwargs


def env_factory(
    env_id: str, kwargs: dict[str, Any] | None = None, wrappers: Any = (),
) -> Callable[[], gymnasium.Env]:
    """A zero-argument callable making one more ``env_id`` environment per call (see the module
    docstring); the id and the wrappers are resolved now, the first environment on first call."""
    entry, kind = resolve_env(env_id)
    kwargs = {**_spec_kwargs(env_id), **(kwargs or {})}
    layers = [_wrapper(w) for w in wrappers or ()]
    if kind == "class" and hasattr(entry, "make_factory"):
        make = entry.make_factory(**kwargs)
    else:
        def make() -> gymnasium.Env:
            return entry(**kwargs)

    def make_env() -> gymnasium.Env:
        env = make()
        for wrapper, options in layers:
            env = wrapper(env, **options)
        return env

    make_env.close = getattr(make, "close", lambda: None)  # type: ignore[attr-defined]
    return make_env


__all__ = ["BUILTIN_ENVS", "SEARCH_ENV_ID", "check_env_kwargs", "env_factory", "registered_ids",
           "resolve_env"]
