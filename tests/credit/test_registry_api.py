"""The registry's public surface: registration rules, config building, name resolution, the error
messages a user reads, and the common diagnostics every estimator's result carries."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np
import pytest

from creditgym.credit import CreditInputError, estimate, get_estimator, make_config, registry
from creditgym.credit.registry import ESTIMATORS, register_estimator, unregister_estimator
from creditgym.errors import ConfigError
from tests.credit.helpers import make_traj

BUILTINS = "grpo, rloo, gigpo, igpo, tempo, oprl, pure"


@dataclass
class CfgA:
    x: int = 0


@dataclass
class CfgB:
    y: int = 0


def never_called(batch, config, inputs):
    raise AssertionError("registration tests never run the estimator")


@pytest.fixture
def scratch():
    """Names registered by a test; unregistered afterwards so other tests see only built-ins."""
    names: list[str] = []
    yield names
    for name in names:
        unregister_estimator(name)


# ------------------------------------------------------------------- common diagnostics


def test_common_diagnostics_of_a_hand_worked_batch():
    # Groups of sizes 1, 3, 3 (7 trajectories, 8 turns: "a" has two). GRPO with norm "mean":
    # the singleton gets 0; g2's returns [1, 0, 0] give [2/3, -1/3, -1/3] (all non-zero); g3's
    # equal returns give 0. Sizes 1, 3, 3 keep the shares of ==1, !=1 and ==2 apart (1/3, 2/3,
    # 0), and the non-zero counts 0, 3, 0 keep ==0, !=0 and ==1 apart (2/3, 1/3, 0).
    groups = [[make_traj("s", "g1", [1.0])],
              [make_traj("a", "g2", [0.0, 1.0]), make_traj("b", "g2", [0.0]),
               make_traj("c", "g2", [0.0])],
              [make_traj(t, "g3", [0.5]) for t in "def"]]
    res = estimate(groups, {"name": "grpo", "norm": "mean"})
    # 8 turns x 2 action tokens = 16 trained tokens; |A| summed: a 4 x 2/3, b and c 2 x 1/3 each
    assert res.diagnostics == {
        "groups": 3.0, "trajectories": 7.0, "turns": 8.0,
        "group_size_mean": pytest.approx(7 / 3), "group_size_min": 1.0, "group_size_max": 3.0,
        "singleton_group_share": pytest.approx(1 / 3),
        "zero_adv_group_share": pytest.approx(2 / 3),
        "mean_abs_adv_token": pytest.approx(4 / 16),
        "mean_abs_episode": pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 7),
        "estimator": "grpo",
    }


def test_misaligned_and_missing_arrays_are_reported_with_their_counts(scratch):
    @register_estimator("tmp_short", CfgA)
    def short(b, config, inputs):
        return [np.zeros(1) for _ in b.trajectories], {}

    @register_estimator("tmp_few", CfgB)
    def few(b, config, inputs):
        return [], {}

    scratch += ["tmp_short", "tmp_few"]
    one = [[make_traj("A", "g", [0])]]  # 2 prompt + 2 action + 1 observation tokens
    with pytest.raises(CreditInputError) as err:
        estimate(one, "tmp_short")
    assert str(err.value) == ("an estimator returned 1 advantages for 5 tokens; return one array "
                              "per trajectory aligned with tokens()")
    two = [[make_traj("A", "g", [0]), make_traj("B", "g", [1])]]
    with pytest.raises(CreditInputError, match=r"^estimator 'tmp_few' returned 0 arrays for 2 "
                                               r"trajectories$"):
        estimate(two, "tmp_few")


def test_missing_input_error_says_when_no_inputs_were_given():
    with pytest.raises(CreditInputError, match=r"igpo needs inputs\['probe_logprob'\].*"
                                               r"\(given: none\)$"):
        estimate([[make_traj("A", "g", [0])]], "igpo")


# ------------------------------------------------------------------- registration


def test_register_estimator_rejects_malformed_names_and_input_lists():
    for bad in ("", 3):
        with pytest.raises(ConfigError, match=f"^register_estimator: name must be a non-empty "
                                              f"string, got {bad!r}$"):
            register_estimator(bad, CfgA)
    # an empty or non-string input name is as malformed as a bare string
    for needs in (("",), (1,), ("ok", "")):
        with pytest.raises(ConfigError, match=r"^register_estimator\('x'\): needs must be a "
                                              "sequence of input names"):
            register_estimator("x", CfgA, needs=needs)
    with pytest.raises(ConfigError, match=r"^register_estimator\('x'\): optional must be a "
                                          r"sequence of input names such as \('probe_logprob',\)"
                                          r", got 'step_reward'$"):
        register_estimator("x", CfgA, optional="step_reward")
    assert "x" not in ESTIMATORS


def test_reregistering_the_same_function_replaces_its_entry_and_frees_the_old_config(scratch):
    # re-importing a module registers the same function again, possibly with a new config class
    scratch.append("tmp_re")
    assert register_estimator("tmp_re", CfgA, optional=("hint",))(never_called) is never_called
    assert ESTIMATORS["tmp_re"].optional == ("hint",) and ESTIMATORS["tmp_re"].needs == ()
    register_estimator("tmp_re", CfgB, needs=("x",))(never_called)
    est = ESTIMATORS["tmp_re"]
    assert (est.config, est.needs, est.optional) == (CfgB, ("x",), ())
    assert get_estimator(CfgB()) is est
    # the old class no longer names the estimator, and is free for another one
    with pytest.raises(ConfigError, match=r"^credit: CfgA is not a registered estimator config "
                                          rf"\(registered estimators: {BUILTINS}, tmp_re\)$"):
        get_estimator(CfgA())
    scratch.append("tmp_other")
    register_estimator("tmp_other", CfgA)(never_called)
    assert get_estimator(CfgA()).name == "tmp_other"


def test_unregister_frees_the_config_class(scratch):
    scratch += ["tmp_gone", "tmp_new"]
    register_estimator("tmp_gone", CfgA)(never_called)
    unregister_estimator("tmp_gone")
    unregister_estimator("tmp_gone")  # unknown names are ignored
    with pytest.raises(ConfigError, match="CfgA is not a registered estimator config"):
        get_estimator(CfgA())
    register_estimator("tmp_new", CfgA)(never_called)
    assert get_estimator(CfgA()).name == "tmp_new"


def test_clash_message_names_both_functions():
    def fn(batch, config, inputs):
        raise AssertionError("never called")

    mine = f"{__name__}.test_clash_message_names_both_functions.<locals>.fn"
    with pytest.raises(ConfigError) as err:
        register_estimator("gigpo", CfgA)(fn)
    assert str(err.value) == ("estimator 'gigpo' is already registered by creditgym.credit.gigpo."
                              f"from_trajectories; choose another name for {mine}")


def test_clash_message_names_callables_without_a_qualname_or_module(scratch):
    # any callable registers: a functools.partial has no __qualname__ (its repr stands in), a C
    # slot's method-wrapper no __module__ ("?" stands in); a clash must still name them
    part = functools.partial(never_called)
    scratch += ["tmp_partial", "tmp_wrapper"]
    register_estimator("tmp_partial", CfgA)(part)
    with pytest.raises(ConfigError, match=re.escape(f"already registered by functools.{part!r};")):
        register_estimator("tmp_partial", CfgA)(never_called)
    register_estimator("tmp_wrapper", CfgB)((1).__add__)
    with pytest.raises(ConfigError, match=re.escape("already registered by ?.int.__add__;")):
        register_estimator("tmp_wrapper", CfgB)(never_called)


# ------------------------------------------------------------------- configs and names


def test_config_specs_without_a_name_are_refused_listing_the_choices():
    no_name = rf"^credit: a mapping needs 'name' \(one of {BUILTINS}\)$"
    with pytest.raises(ConfigError, match=no_name):
        get_estimator({"gamma": 0.5})
    with pytest.raises(ConfigError, match=no_name):
        make_config({"gamma": 0.5})
    with pytest.raises(ConfigError, match="^credit: expected a name or a mapping, got int$"):
        make_config(3)


def test_option_errors_name_the_estimator_section():
    # from_dict labels its errors with `where`; without it they would say "GiGPOConfig"
    with pytest.raises(ConfigError, match=r"^credit\.gigpo: unknown option\(s\) 'gama'"):
        make_config({"name": "gigpo", "gama": 0.9})


def test_unknown_name_messages_in_full(monkeypatch):
    with pytest.raises(ConfigError) as err:
        make_config("ppo")
    assert str(err.value) == (f"credit: unknown estimator 'ppo'; choose one of {BUILTINS}, or "
                              "'package.module:name' for one defined in a module of your own")
    with pytest.raises(ConfigError, match=r"^credit: cannot import 'no_such_pkg\.mod' for "
                                          r"estimator 'no_such_pkg\.mod:x' \(.*\); put the folder "
                                          "that holds it on PYTHONPATH$"):
        make_config("no_such_pkg.mod:x")
    monkeypatch.setattr(registry, "ESTIMATORS", {})
    with pytest.raises(ConfigError, match=r"choose one of \(none registered\), or"):
        make_config("gigpo")


def test_module_specs_split_at_the_first_colon_and_need_both_halves():
    # "module:name" splits at the first colon: the rest is the estimator's name
    with pytest.raises(ConfigError, match=r"cannot import 'no_such_pkg\.mod' for estimator "
                                          r"'no_such_pkg\.mod:a:b'"):
        make_config("no_such_pkg.mod:a:b")
    # an empty module or an empty name is no module spec: a plain unknown name (no import)
    for name in (":gigpo", "no_such_pkg:", ":"):
        with pytest.raises(ConfigError, match=f"^credit: unknown estimator '{name}'; choose"):
            make_config(name)
