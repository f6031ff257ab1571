"""Answer scoring (SQuAD exact match and token F1) and the reward components of tool environments.

Scores compare a prediction with every gold alias and keep the best, after SQuAD normalisation
(lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace), as Search-R1's
``em_check`` and the SQuAD/HotpotQA evaluation scripts do.

A tool environment's reward is a sum of components, each reported on its own in
``info["metrics"]`` under ``reward/<name>`` with ``reward`` holding the sum. Components land on
the step they belong to:

- ``reward/invalid``: ``-invalid_penalty`` on every step whose action was invalid (no call, bad
  syntax, unknown tool, bad arguments, too many calls, a tool that raised or timed out).
- ``reward/search_cost``: ``-search_cost`` per call of a tool listed in ``costly_tools``, on the
  step that made the calls (MASH's pay-per-search cost); a failed call is still paid for.
- ``reward/outcome``: on the final step only (the answer, or the truncating last turn):
  ``em * em_weight + f1 * f1_weight`` by default (``ToolEnv.reward`` may replace it).
- ``reward/format``: on the final step only, Search-R1's format-shaped variant (its
  ``structure_format_score``) as an additive term: ``+format`` when the trajectory was well
  formed but the answer wrong, ``-format`` when the answer was right but the trajectory was not,
  ``0`` otherwise. So with ``em_weight=1`` the outcome+format is 1 (right, well formed),
  ``1 - format`` (right, malformed), ``format`` (wrong, well formed) or 0 (wrong, malformed).
  A trajectory is well formed when every action was valid, it ended with an answer, and, when
  ``format_requires_think``, every action held a ``<think>`` block.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, remove punctuation, remove articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def _golds(golds: str | Iterable[str]) -> list[str]:
    return [golds] if isinstance(golds, str) else [str(g) for g in golds]


def exact_match(prediction: str | None, golds: str | Iterable[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold alias, else 0.0."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _golds(golds)))


def substring_match(prediction: str | None, golds: str | Iterable[str]) -> float:
    """1.0 when a normalised gold alias occurs in the normalised prediction (Search-R1's subEM)."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(g) in pred for g in _golds(golds)))


def token_f1(prediction: str | None, golds: str | Iterable[str]) -> float:
    """SQuAD token F1 between the normalised prediction and the best-matching gold alias."""
    if prediction is None:
        return 0.0
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for gold in _golds(golds):
        gold_tokens = normalize_answer(gold).split()
        if not pred_tokens or not gold_tokens:
            best = max(best, float(pred_tokens == gold_tokens))
            continue
        common = Counter(pred_tokens) & Counter(gold_tokens)
        same = sum(common.values())
        if same == 0:
            continue
        precision = same / len(pred_tokens)
        recall = same / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


@dataclass
class RewardConfig:
    """Weights of a tool environment's reward components (see the module docstring)."""

    em: float = 1.0
    """Weight of exact match (0/1) in the outcome reward."""
    f1: float = 0.0
    """Weight of token F1 (0..1) in the outcome reward."""
    format: float = 0.0
    """Search-R1 format shaping: +format for a well-formed wrong trajectory, -format for a
    malformed right one (0 turns it off)."""
    invalid_penalty: float = 0.0
    """Magnitude subtracted on every invalid step (give a positive number)."""
    search_cost: float = 0.0
    """Magnitude subtracted per call of a tool in ``costly_tools`` (MASH)."""
    costly_tools: tuple[str, ...] = ("search",)
    """Names of the tools that ``search_cost`` charges for."""
    format_requires_think: bool = False
    """Whether a well-formed trajectory needs a ``<think>`` block in every action."""

    def __post_init__(self) -> None:
        if self.invalid_penalty < 0 or self.search_cost < 0:
            raise ValueError(
                "invalid_penalty and search_cost are magnitudes that get subtracted; "
                "give them as numbers >= 0"
            )
        self.costly_tools = tuple(self.costly_tools)


def outcome_metrics(prediction: str | None, golds: Iterable[str], config: RewardConfig) -> dict[str, float]:
    """The default outcome: ``em``, ``f1``, ``correct`` (= em) and ``reward`` (weighted sum)."""
    golds = list(golds)
    em = exact_match(prediction, golds)
    f1 = token_f1(prediction, golds)
    return {
        "em": em,
        "f1": f1,
        "correct": em,
        "reward": config.em * em + config.f1 * f1,
    }


def format_component(well_formed: bool, correct: bool, weight: float) -> float:
    """Search-R1's format shaping as an additive term (see the module docstring)."""
    if weight == 0.0:
        return 0.0
    if correct:
        return 0.0 if well_formed else -weight
    return weight if well_formed else 0.0
