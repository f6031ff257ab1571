"""SQuAD-normalised answer scoring and the reward components."""

from __future__ import annotations

import pytest

from creditgym.envs.rewards import (
    RewardConfig,
    exact_match,
    format_component,
    normalize_answer,
    outcome_metrics,
    substring_match,
    token_f1,
)


def test_normalize_answer():
    assert normalize_answer("  The  Eiffel-Tower!! ") == "eiffeltower"
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("theater") == "theater"  # articles only as whole words


def test_exact_match_any_alias():
    golds = ["William Shakespeare", "Shakespeare"]
    assert exact_match("shakespeare.", golds) == 1.0
    assert exact_match("the William  Shakespeare", golds) == 1.0
    assert exact_match("Marlowe", golds) == 0.0
    assert exact_match(None, golds) == 0.0
    assert exact_match("Paris", "paris") == 1.0


def test_token_f1():
    assert token_f1("William Shakespeare", ["Shakespeare"]) == pytest.approx(2 / 3)
    assert token_f1("Shakespeare", ["William Shakespeare", "Shakespeare"]) == 1.0
    assert token_f1("nothing here", ["Shakespeare"]) == 0.0
    assert token_f1("the", ["a"]) == 1.0  # both normalise to empty
    assert token_f1(None, ["x"]) == 0.0
    assert token_f1("x b b", ["b b c"]) == pytest.approx(2 / 3)


def test_substring_match():
    assert substring_match("it was William Shakespeare.", ["Shakespeare"]) == 1.0
    assert substring_match("Marlowe", ["Shakespeare"]) == 0.0


def test_outcome_metrics_weights():
    m = outcome_metrics("William Shakespeare", ["Shakespeare"], RewardConfig(em=1.0, f1=0.5))
    assert m["em"] == 0.0 and m["correct"] == 0.0
    assert m["reward"] == pytest.approx(0.5 * 2 / 3)


def test_format_component_matches_search_r1():
    lam = 0.2
    # correct & well formed -> 1 ; correct & malformed -> 1 - lam ; wrong & well formed -> lam
    assert 1 + format_component(True, True, lam) == 1
    assert 1 + format_component(False, True, lam) == pytest.approx(1 - lam)
    assert 0 + format_component(True, False, lam) == pytest.approx(lam)
    assert 0 + format_component(False, False, lam) == 0
    assert format_component(True, False, 0.0) == 0.0


def test_reward_config_rejects_negative_magnitudes():
    with pytest.raises(ValueError):
        RewardConfig(invalid_penalty=-0.1)
