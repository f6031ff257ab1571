"""Typed configuration: dataclasses with a docstring per field, built from plain dicts or YAML.

``from_dict(Cls, data)`` is strict: an unknown key is a ``ConfigError`` that lists the valid
choices, and a value whose type does not match the field's annotation is rejected with the
field's path, so a typo in a YAML file never passes silently.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from creditgym.errors import ConfigError
from creditgym.json_values import to_plain  # noqa: F401  (re-exported: configs as plain data)

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "") -> T:
    """Build the dataclass ``cls`` from ``data``, recursing into nested dataclass fields."""
    data = {} if data is None else data
    label = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping of options, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{label}: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"valid options are: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {
        name: _coerce(hints[name], value, f"{label}.{name}") for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{label}: {exc}") from exc


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file (an empty file is ``{}``). A missing file, a YAML syntax error
    (reported as ``FILE:LINE:COLUMN``) or a top level that is not a mapping is a ``ConfigError``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = " ".join(str(x) for x in (getattr(exc, "context", None),
                                          getattr(exc, "problem", None)) if x) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {what}; fix the file's syntax there") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of options (key: value), got "
            f"{type(data).__name__}")
    return data


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Read a YAML file (see :func:`read_yaml`) into the dataclass ``cls``."""
    return from_dict(cls, read_yaml(path), where=str(path))


def _coerce(annotation: Any, value: Any, label: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, label)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{label}: {value!r} fits none of {annotation}")
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(f"{label}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):  # already built (e.g. passed from Python, not YAML)
            return value
        return from_dict(annotation, value, where=label)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{label}: expected a list, got {value!r}")
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        items = [_coerce(item, v, f"{label}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
            raise ConfigError(
                f"{label}: expected {annotation.__name__}, got {type(value).__name__} {value!r}"
            )
    return value
