import numpy as np
import pytest

from creditgym.credit import CreditInputError, estimate, gigpo, igpo, make_config, oprl, pure, tempo
from creditgym.credit.gigpo import GiGPOConfig
from creditgym.credit.registry import ESTIMATORS
from creditgym.errors import ConfigError
from tests.credit.helpers import make_traj


def batch():
    g1 = [make_traj("a", "g1", [0, 1], anchors=["q", "d1"], metrics={"f1": 1.0, "success": 1}),
          make_traj("b", "g1", [0, 0], anchors=["q", "d2"], metrics={"f1": 0.0, "success": 0}),
          make_traj("c", "g1", [0.5], anchors=["q"], metrics={"f1": 0.5, "success": 0})]
    g2 = [make_traj("d", "g2", [1.0], metrics={"f1": 1.0, "success": 1})]
    return [g1, g2]


INPUTS = {
    "probe_logprob": {"a": [-3, -1], "b": [-3, -2.5], "c": [-1.0], "d": [-2.0]},
    "logratio_sum": {"a": [1, 0.5], "b": [-1, 0.2], "c": [0.3], "d": [0.0]},
}


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_aligns_with_tokens_and_mask(name):
    res = estimate(batch(), name, INPUTS)
    assert res.diagnostics["estimator"] == name
    for t, adv in zip(res.trajectories, res.advantages):
        assert adv.shape == t.tokens().shape
        assert np.all(adv[t.loss_mask() == 0] == 0)
        assert np.isfinite(adv).all()
    # the singleton group g2 gets no credit from relative estimators (GiGPO passes the raw
    # score of a lone trajectory through, CREDIT.md; PURE keeps its process returns)
    if name not in ("pure", "gigpo"):
        assert np.all(res.advantages[-1] == 0)
    res.assign()
    assert res.trajectories[0].advantages == res.advantages[0].tolist()


def spread(traj, per_turn):
    """Per-turn values -> per-token values of ``traj``: each turn's value on its action tokens,
    0 on the prompt and the observations (written out here, independent of the adapter)."""
    out = [0.0] * len(traj.prompt_ids)
    for v, a, o in zip(per_turn, traj.action_ids, traj.observation_ids):
        out += [float(v)] * len(a) + [0.0] * len(o)
    return np.asarray(out)


def assert_spread(res, per_turn_by_traj):
    assert [t.id for t in res.trajectories] == list(per_turn_by_traj)
    for t, adv in zip(res.trajectories, res.advantages):
        np.testing.assert_allclose(adv, spread(t, per_turn_by_traj[t.id]), rtol=1e-9, atol=1e-12)


def worked_pair():
    """The CREDIT.md worked example: A searches d1 and is rewarded, B searches d2 and is not."""
    return [[make_traj("A", "g", [0, 1], anchors=["q", "d1"]),
             make_traj("B", "g", [0, 0], anchors=["q", "d2"])]]


def test_gigpo_matches_worked_example_through_adapter():
    # gamma 0.5: G_A = [0.5, 1], G_B = [0, 0]; step group {A0, B0} (anchor q) has mean 0.25,
    # so A^S = [0.25, 0 | -0.25, 0]; episode (norm mean) R = [1, 0] -> A^E = [0.5 | -0.5];
    # total = A^E + 0.5 * A^S
    res = estimate(worked_pair(), {"name": "gigpo", "gamma": 0.5, "norm": "mean",
                                   "step_weight": 0.5})
    assert_spread(res, {"A": [0.625, 0.5], "B": [-0.625, -0.5]})
    assert res.diagnostics["groups"] == 1.0


def test_gigpo_std_norm_and_penalty_reach_the_estimator():
    # norm std: episode +-0.5 / std(1, 0) = +-0.7071; step group {G=0.5, 0}: +-0.25 / 0.3536;
    # the invalid last turn of A loses 0.1 in both its episode score and its (singleton) step
    trajs = worked_pair()
    trajs[0][0].valid = [True, False]
    opts = dict(gamma=0.5, norm="std", step_weight=2.0, invalid_penalty=0.1)
    res = estimate(trajs, {"name": "gigpo", **opts})
    z = 0.5 / (np.sqrt(0.5) + 1e-6)
    zs = 0.25 / (np.sqrt(0.125) + 1e-6)  # step pool {0.5, 0}: std sqrt(0.125)
    assert_spread(res, {"A": [z + 2 * zs, (0.9 - 0.5) / (np.sqrt(0.5) + 1e-6)],
                        "B": [-z - 2 * zs, -z]})
    direct = gigpo.advantages([0] * 4, [0, 0, 1, 1], ["q", "d1", "q", "d2"], [0, 1, 0, 0],
                              valid=[True, False, True, True], **opts)
    assert_spread(res, {"A": direct.total[:2], "B": direct.total[2:]})


def test_pure_adds_the_weighted_rloo_outcome_to_the_process_returns():
    # min-form at T=0.2 of A's [0.7, 0.6]: weights softmax([-3.5, -3]) = [0.3775, 0.6225],
    # r' = [0.26428, 0.37348], process returns [0.63775, 0.37348]; B's [0] stays 0.
    # RLOO on the returns [1.3, 0]: +-1.3, weighted 0.5 -> +-0.65.
    trajs = [[make_traj("A", "g", [0.7, 0.6]), make_traj("B", "g", [0.0])]]
    res = estimate(trajs, {"name": "pure", "temperature": 0.2, "outcome_weight": 0.5})
    assert_spread(res, {"A": [0.6377540668798145 + 0.65, 0.37347559872111274 + 0.65],
                        "B": [-0.65]})
    proc = pure.min_form([0.7, 0.6, 0.0], temperature=0.2, lengths=[2, 1])
    assert_spread(res, {"A": [proc[0] + proc[1] + 0.65, proc[1] + 0.65], "B": [proc[2] - 0.65]})


def test_gigpo_passes_similarity_and_episode_stats():
    # near-duplicate first anchors: one step group only with similarity 0.9 (exact: singletons);
    # B's second turn invalid, so per-row (step) episode stats differ from per-trajectory ones
    trajs = [[make_traj("A", "g", [0, 1], anchors=["the cat sat on the mat", "d1"]),
              make_traj("B", "g", [0, 0], anchors=["the cat sat on the hat", "d2"],
                        valid=[True, False])]]
    opts = dict(gamma=0.5, norm="mean", invalid_penalty=0.1, episode_stats="step",
                similarity=0.9)
    res = estimate(trajs, {"name": "gigpo", **opts})
    # G = [0.5, 1 | 0, -0.1]; step group {A0, B0}: +-0.25; E = [1, 1 | 0, -0.1], mean 0.475
    assert_spread(res, {"A": [0.525 + 0.25, 0.525], "B": [-0.475 - 0.25, -0.575]})
    direct = gigpo.advantages([0] * 4, [0, 0, 1, 1], [a for t in trajs[0] for a in t.anchors],
                              [0, 1, 0, 0], valid=[True, True, True, False], **opts)
    assert_spread(res, {"A": direct.total[:2], "B": direct.total[2:]})


def test_pure_reads_prm_step_rewards_and_the_outcome_key():
    # PRM scores replace the env's turn rewards; the outcome comes from metrics["f1"]
    trajs = [[make_traj("A", "g", [0.0, 0.0], metrics={"f1": 1.0}),
              make_traj("B", "g", [0.0], metrics={"f1": 0.0})]]
    inputs = {"step_reward": {"A": [0.7, 0.6], "B": [0.0]}}
    res = estimate(trajs, {"name": "pure", "temperature": 0.2, "outcome_key": "f1"}, inputs)
    # process returns as in the example above; RLOO on f1 [1, 0]: +-1 (outcome_weight 1)
    assert_spread(res, {"A": [0.6377540668798145 + 1, 0.37347559872111274 + 1], "B": [-1.0]})
    assert res.diagnostics["mean_abs_process"] == pytest.approx((0.6377540668798145
                                                                 + 0.37347559872111274) / 3)
    assert res.diagnostics["mean_abs_episode"] == pytest.approx(1.0)
    with pytest.raises(CreditInputError, match=r"inputs\['step_reward'\] for trajectory 'B' "
                                               "has 2 values"):
        estimate(trajs, "pure", {"step_reward": {"A": [0.7, 0.6], "B": [0.0, 1.0]}})


def test_grpo_and_rloo_use_the_outcome_key_and_norm():
    # "success" = [1, 0, 0] differs from the episode returns [1, 0, 0.5]
    res = estimate(batch()[:1], {"name": "grpo", "norm": "mean", "outcome_key": "success"})
    assert_spread(res, {"a": [2 / 3, 2 / 3], "b": [-1 / 3, -1 / 3], "c": [-1 / 3]})
    assert res.diagnostics["mean_abs_episode"] == pytest.approx(4 / 9)
    res = estimate(batch()[:1], {"name": "rloo", "outcome_key": "success"})
    # leave-one-out: 1 - 0, 0 - 0.5, 0 - 0.5
    assert_spread(res, {"a": [1.0, 1.0], "b": [-0.5, -0.5], "c": [-0.5]})
    assert res.diagnostics["mean_abs_episode"] == pytest.approx(2 / 3)


def test_igpo_passes_gamma_gain_and_norm():
    opts = dict(gamma=0.5, gain="prob_diff", norm="joint")
    res = estimate(batch()[:1], {"name": "igpo", **opts, "outcome_key": "f1"}, INPUTS)
    probe = [INPUTS["probe_logprob"][k] for k in "abc"]
    direct = igpo.turn_advantages([0, 0, 0], probe, [1.0, 0.0, 0.5], **opts)
    assert_spread(res, dict(zip("abc", direct)))
    default = estimate(batch()[:1], {"name": "igpo", "outcome_key": "f1"}, INPUTS)
    assert not np.allclose(np.concatenate(res.advantages), np.concatenate(default.advantages))


def test_oprl_passes_beta_and_step_weight():
    res = estimate(batch()[:1], {"name": "oprl", "beta": 0.5, "step_weight": 2.0}, INPUTS)
    q = [1, 0.5, -1, 0.2, 0.3]
    s = oprl.step_rewards(q, beta=0.5)
    direct = oprl.advantages([0] * 5, [0, 0, 1, 1, 2], [1.0, 0.0, 0.5], s, step_weight=2.0)
    assert_spread(res, {"a": direct[:2], "b": direct[2:4], "c": direct[4:]})
    q_a = 0.5 * np.mean([1, 0.5])
    q_b = 0.5 * np.mean([-1, 0.2])
    # success is episode return > 0: the pairs are (a, b) and (c, b)
    want = (np.logaddexp(0, -(q_a - q_b)) + np.logaddexp(0, -(0.5 * 0.3 - q_b))) / 2
    assert res.diagnostics["dpo_loss"] == pytest.approx(want)


def test_tempo_matches_the_token_estimator_on_responses():
    res = estimate(batch()[:1], {"name": "tempo", "outcome_key": "f1"})
    trajs = res.trajectories
    toks = [t.tokens()[2:] for t in trajs]
    masks = [t.loss_mask()[2:].astype(bool) for t in trajs]
    direct = tempo.token_advantages([0, 0, 0], toks, [1.0, 0.0, 0.5], policy_mask=masks)
    for t, adv, d in zip(trajs, res.advantages, direct):
        np.testing.assert_allclose(adv, np.concatenate([[0.0, 0.0], d]))
    assert any(np.any(a != 0) for a in res.advantages)


def test_make_config_is_strict():
    cfg = make_config({"name": "gigpo", "similarity": 0.9, "gamma": 1})
    assert isinstance(cfg, GiGPOConfig) and cfg.gamma == 1.0 and cfg.similarity == 0.9
    with pytest.raises(ConfigError, match="unknown option"):
        make_config({"name": "gigpo", "gama": 0.9})
    with pytest.raises(ConfigError, match="unknown estimator"):
        make_config("ppo")
    with pytest.raises(ConfigError, match="similarity"):
        make_config({"name": "gigpo", "similarity": 1.5})
    with pytest.raises(ConfigError, match="episode_stats"):
        make_config({"name": "gigpo", "episode_stats": "rows"})


def test_adapter_errors():
    with pytest.raises(CreditInputError, match=r"groups\[1\] is empty"):
        estimate([batch()[0], []], "grpo")
    with pytest.raises(CreditInputError, match="no trajectory groups"):
        estimate([], "grpo")
    with pytest.raises(CreditInputError, match="probe_logprob"):
        estimate(batch(), "igpo")
    bad = {"logratio_sum": {**INPUTS["logratio_sum"], "a": [1.0]}}
    with pytest.raises(CreditInputError, match="'a' has 1 values"):
        estimate(batch(), "oprl", bad)
    with pytest.raises(CreditInputError, match="metrics has no 'em'"):
        estimate(batch(), {"name": "grpo", "outcome_key": "em"})


# --------------------------------------------------------------- registration (issue 10, item 4)


@pytest.fixture
def user_estimator():
    """Imports tests/credit/one_file_estimator.py (which registers ``turn_bonus``); removes it
    afterwards so other tests see only the built-ins."""
    import importlib
    import sys

    from creditgym.credit.registry import unregister_estimator

    module = importlib.import_module("tests.credit.one_file_estimator")
    yield module
    unregister_estimator("turn_bonus")
    sys.modules.pop("tests.credit.one_file_estimator", None)


def test_an_estimator_defined_in_its_own_file_works_through_estimate_and_make_config(
        user_estimator):
    cfg = make_config({"name": "turn_bonus", "per_turn": 0.5})
    assert isinstance(cfg, user_estimator.TurnBonusConfig) and cfg.per_turn == 0.5
    with pytest.raises(ConfigError, match="per_turn"):  # strict options, the valid one listed
        make_config({"name": "turn_bonus", "per_tunr": 0.5})
    trajs = [[make_traj("A", "g", [0, 1]), make_traj("B", "g", [0])]]
    res = estimate(trajs, cfg, {"bonus": {"A": [1.0, 2.0], "B": [3.0]}})
    # A has 2 turns: [1 - 0.5*2, 2 - 0.5*2] = [0, 1]; B has 1 turn: 3 - 0.5 = 2.5
    assert_spread(res, {"A": [0.0, 1.0], "B": [2.5]})
    assert res.diagnostics["estimator"] == "turn_bonus" and res.diagnostics["mean_bonus"] == 2.0
    # the name works as a plain spec too, and it is listed among the registered estimators
    assert estimate(trajs, "turn_bonus", {"bonus": [[0, 0], [0]]}).diagnostics["turns"] == 3.0
    with pytest.raises(ConfigError, match="turn_bonus"):
        make_config("no_such_estimator")


def test_a_config_can_name_an_estimator_module_to_import():
    import sys

    from creditgym.credit.registry import unregister_estimator

    sys.modules.pop("tests.credit.one_file_estimator", None)
    unregister_estimator("turn_bonus")
    try:
        cfg = make_config({"name": "tests.credit.one_file_estimator:turn_bonus", "per_turn": 1})
        assert type(cfg).__module__ == "tests.credit.one_file_estimator" and cfg.per_turn == 1.0
        res = estimate([[make_traj("A", "g", [0])]], "tests.credit.one_file_estimator:turn_bonus",
                       {"bonus": {"A": [3.0]}})
        assert res.diagnostics["estimator"] == "turn_bonus" and res.advantages[0].max() == 2.9
    finally:
        unregister_estimator("turn_bonus")
        sys.modules.pop("tests.credit.one_file_estimator", None)
    with pytest.raises(ConfigError, match="cannot import 'no_such_pkg.mod'.*PYTHONPATH"):
        make_config("no_such_pkg.mod:x")
    with pytest.raises(ConfigError, match="importing 'tests.credit.helpers' registered no "
                                          "estimator 'x'; registered: grpo, rloo"):
        make_config("tests.credit.helpers:x")


def test_needs_are_checked_before_the_estimator_runs(user_estimator):
    trajs = [[make_traj("A", "g", [0, 1])]]
    with pytest.raises(CreditInputError, match=r"turn_bonus needs inputs\['bonus'\].*given: "
                                               r"\['other'\]"):
        estimate(trajs, "turn_bonus", {"other": {"A": [0, 0]}})
    from creditgym.credit import get_estimator

    assert get_estimator("turn_bonus").needs == ("bonus",)
    assert get_estimator(make_config("turn_bonus")).name == "turn_bonus"


def test_builtin_estimators_declare_the_inputs_they_need():
    from creditgym.credit import get_estimator

    needs = {name: (e.needs, e.optional) for name, e in ESTIMATORS.items()}
    assert list(needs) == ["grpo", "rloo", "gigpo", "igpo", "tempo", "oprl", "pure"]
    assert needs["igpo"] == (("probe_logprob",), ())
    assert needs["oprl"] == (("logratio_sum",), ())
    assert needs["pure"] == ((), ("step_reward",))
    assert all(needs[n] == ((), ()) for n in ("grpo", "rloo", "gigpo", "tempo"))
    assert get_estimator({"name": "gigpo", "gamma": 0.5}).config is GiGPOConfig


def test_unknown_estimator_error_lists_every_registered_name():
    with pytest.raises(ConfigError) as err:
        make_config({"name": "ppo"})
    for name in ESTIMATORS:
        assert name in str(err.value)
    with pytest.raises(ConfigError, match="not a registered estimator config"):
        estimate(batch(), object())


def test_register_estimator_refuses_clashes_and_malformed_registrations():
    from dataclasses import dataclass

    from creditgym.credit import register_estimator
    from creditgym.credit.registry import unregister_estimator

    @dataclass
    class Cfg:
        x: int = 0

    def fn(batch, config, inputs):
        raise AssertionError("never called")

    with pytest.raises(ConfigError, match="'gigpo' is already registered by "
                                          "creditgym.credit.gigpo"):
        register_estimator("gigpo", Cfg)(fn)
    with pytest.raises(ConfigError, match="already belongs to estimator 'gigpo'"):
        register_estimator("gigpo2", GiGPOConfig)(fn)
    with pytest.raises(ConfigError, match="must be a dataclass"):
        register_estimator("x", dict)
    with pytest.raises(ConfigError, match="needs must be a sequence"):
        register_estimator("x", Cfg, needs="probe_logprob")
    assert "gigpo2" not in ESTIMATORS and ESTIMATORS["gigpo"].config is GiGPOConfig
    try:  # a fresh name registers, and its function is returned unchanged
        assert register_estimator("tmp_x", Cfg, needs=("a",))(fn) is fn
        assert ESTIMATORS["tmp_x"].needs == ("a",) and isinstance(make_config("tmp_x"), Cfg)
    finally:
        unregister_estimator("tmp_x")
    with pytest.raises(ConfigError, match="unknown estimator 'tmp_x'"):
        make_config("tmp_x")


def test_an_estimator_returning_misaligned_arrays_is_reported():
    from dataclasses import dataclass

    from creditgym.credit import register_estimator
    from creditgym.credit.registry import unregister_estimator

    @dataclass
    class Short:
        pass

    @register_estimator("tmp_short", Short)
    def short(b, config, inputs):
        return [np.zeros(1) for _ in b.trajectories], {}

    try:
        with pytest.raises(CreditInputError, match="aligned with tokens"):
            estimate(batch(), "tmp_short")
    finally:
        unregister_estimator("tmp_short")
