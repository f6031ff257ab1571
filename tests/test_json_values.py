"""The one JSON-able conversion and the one value-kind wording of the servers' 400 messages."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from creditgym.json_values import json_kind, to_plain


class Color(enum.Enum):
    RED = "red"


@dataclass
class Inner:
    path: Path = Path("/tmp/x")
    stops: tuple[str, ...] = ("</a>", "</b>")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    weights: dict = field(default_factory=lambda: {1: np.float32(0.5), "t": torch.tensor([1, 2])})


def test_to_plain_gives_what_json_and_safe_yaml_accept():
    value = {"cfg": Outer(), "arr": np.arange(3), "n": np.int64(7), "flag": np.bool_(True),
             "tags": {"b", "a"}, "color": Color.RED, "scalar": torch.tensor(2.5)}
    plain = to_plain(value)
    assert plain == {
        "cfg": {"inner": {"path": "/tmp/x", "stops": ["</a>", "</b>"]},
                "weights": {"1": 0.5, "t": [1, 2]}},
        "arr": [0, 1, 2], "n": 7, "flag": True, "tags": ["a", "b"], "color": "red",
        "scalar": 2.5,
    }
    assert type(plain["n"]) is int and type(plain["cfg"]["weights"]["1"]) is float
    assert json.loads(json.dumps(plain)) == plain
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain


def test_unknown_objects_become_text_or_a_clear_error_when_strict():
    thing = object()
    assert to_plain([thing]) == [str(thing)]
    with pytest.raises(TypeError, match="object is not JSON-serialisable"):
        to_plain({"ok": 1, "bad": [thing]}, strict=True)


@pytest.mark.parametrize("value,text", [
    ("x", 'a string ("x")'), (5, "an integer (5)"), (True, "a boolean (true)"),
    (None, "null (null)"), ([1], "a list ([1])"), ({"a": 1}, 'an object ({"a": 1})'),
    (1.5, "a number (1.5)"), ("y" * 60, 'a string ("' + "y" * 36 + '...)'),
])
def test_json_kind_names_the_value_a_client_sent(value, text):
    assert json_kind(value) == text
