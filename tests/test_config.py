"""Strict typed configs: unknown keys and wrong types are errors that say what is valid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from creditgym.config import from_dict, load_yaml
from creditgym.errors import ConfigError


@dataclass
class Inner:
    k: int = 3
    """top-k"""


@dataclass
class Outer:
    name: str = "x"
    """a name"""
    lr: float = 1e-3
    """learning rate"""
    mode: Literal["a", "b"] = "a"
    """mode"""
    maybe: Optional[int] = None
    """optional"""
    tags: list[str] = field(default_factory=list)
    """tags"""
    inner: Inner = field(default_factory=Inner)
    """nested"""


def test_builds_nested_and_coerces_int_to_float():
    cfg = from_dict(Outer, {"lr": 1, "inner": {"k": 5}, "tags": ["p"], "maybe": 2})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.inner.k == 5 and cfg.tags == ["p"] and cfg.maybe == 2


def test_unknown_key_lists_valid_choices():
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, {"nmae": "y"})
    assert "'nmae'" in str(e.value) and "name" in str(e.value) and "inner" in str(e.value)


def test_nested_unknown_key_names_its_path():
    with pytest.raises(ConfigError, match=r"Outer.inner: unknown option\(s\) 'kk'"):
        from_dict(Outer, {"inner": {"kk": 1}})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"lr": "fast"}, "Outer.lr: expected float"),
        ({"mode": "c"}, "Outer.mode: 'c' is not one of 'a', 'b'"),
        ({"tags": "p"}, "Outer.tags: expected a list"),
        ({"inner": {"k": True}}, "Outer.inner.k: expected int"),
        ({"inner": 3}, "Outer.inner: expected a mapping"),
    ],
)
def test_wrong_types_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        from_dict(Outer, data)


def test_yaml_round_trip_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run\ninner:\n  k: 7\n")
    assert load_yaml(Outer, path).inner.k == 7
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(Outer, tmp_path / "nope.yaml")
