"""Text spaces of creditgym environments: ``WideText`` and the observation text helpers.

``WideText`` is a ``gymnasium.spaces.Text`` over every printable Basic Multilingual Plane
character plus tab/newline/CR; ``sanitize_text`` replaces characters outside it by U+FFFD,
``truncate_text`` cuts long text with a visible marker, and ``canonical_anchor`` is the GiGPO
anchor of an observation (whitespace runs collapsed to one space, stripped).
"""

from __future__ import annotations

import copy
import functools
import re
from types import MappingProxyType
from typing import Any

import gymnasium
import numpy as np
from gymnasium.spaces import Text

_OUTSIDE_CHARSET_RE = re.compile("[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd]")


@functools.cache
def _wide_charset() -> tuple[frozenset[str], tuple[str, ...], MappingProxyType, str]:
    codes = [9, 10, 13, *range(0x20, 0x7F), *range(0xA0, 0xD800), *range(0xE000, 0xFFFE)]
    chars = tuple(chr(c) for c in codes)
    index = MappingProxyType({c: np.int32(i) for i, c in enumerate(chars)})
    return frozenset(chars), chars, index, "".join(chars)


class WideText(Text):
    """``Text`` over every printable Basic Multilingual Plane character plus ``\\t\\n\\r``.

    The explicit charset (63,424 characters) is built once per process and shared by every
    instance, so making an environment stays cheap; ``repr`` stays short.
    """

    def __init__(self, max_length: int, *, min_length: int = 0, seed: Any = None):
        if min_length < 0 or min_length > max_length:
            raise ValueError(f"need 0 <= min_length <= max_length, got {min_length}, {max_length}")
        self.min_length = int(min_length)
        self.max_length = int(max_length)
        self._char_set, self._char_list, self._char_index, self._char_str = _wide_charset()
        gymnasium.spaces.Space.__init__(self, dtype=str, seed=seed)

    def __repr__(self) -> str:
        return (
            f"WideText({self.min_length}, {self.max_length}, "
            f"charset=<{len(self._char_list)} printable BMP characters + tab/newline/CR>)"
        )

    def __deepcopy__(self, memo: dict) -> WideText:
        new = WideText(self.max_length, min_length=self.min_length)
        new._np_random = copy.deepcopy(self._np_random, memo)
        return new

    def __reduce__(self):
        return (_rebuild_wide_text, (self.max_length, self.min_length, self._np_random))


def _rebuild_wide_text(max_length: int, min_length: int, rng: Any) -> WideText:
    space = WideText(max_length, min_length=min_length)
    space._np_random = rng
    return space


def sanitize_text(text: str) -> str:
    """``text`` with every character outside ``WideText``'s charset replaced by U+FFFD."""
    return _OUTSIDE_CHARSET_RE.sub("\ufffd", text)


def truncate_text(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters, ending in ``\\n[... truncated N characters]``."""
    if len(text) <= max_chars:
        return text
    dropped = len(text) - max_chars
    for _ in range(3):  # the marker's own length depends on N
        marker = f"\n[... truncated {dropped} characters]"
        keep = max(0, max_chars - len(marker))
        dropped = len(text) - keep
    if len(marker) > max_chars:
        return text[:max_chars]
    return text[:keep] + marker


def canonical_anchor(text: str) -> str:
    """GiGPO's anchor of an observation: the text with whitespace runs collapsed to one space and
    stripped, so that anchors compare as text (exactly or with difflib similarity)."""
    return " ".join(text.split())
