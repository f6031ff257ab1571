"""Credit inputs by name: the trainer provides exactly what the estimator's ``needs`` say.

User estimators and providers are registered here as a user would (real functions, removed
after each test); the built-in providers run on real tiny models: IGPO's probes through a real
TransformersBackend, OPRL's log-ratios through a real DPO step of a PRM copied from the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from creditgym.credit import estimate, make_config, register_estimator
from creditgym.credit.adapter import per_turn_input, turns_to_tokens
from creditgym.credit.registry import unregister_estimator
from creditgym.errors import ConfigError
from creditgym.trainers.credit_inputs import (
    PROVIDERS,
    credit_inputs,
    input_problems,
    register_input,
    setup_inputs,
    unregister_input,
)
from tests.trainers.helpers import PAD, make_trajs, tiny_model


@dataclass
class BonusConfig:
    scale: float = 1.0


@dataclass
class MaybeConfig:
    pass


@pytest.fixture
def user_parts():
    """Estimator ``bonus`` (needs input ``bonus``), estimator ``maybe`` (optional ``extra``), and
    a ``bonus`` provider that records its calls and sets the trainer up once."""
    calls = []

    @register_estimator("bonus", BonusConfig, needs=("bonus",))
    def bonus_estimator(batch, config, inputs):
        v = config.scale * per_turn_input("bonus", inputs, batch, "bonus")
        return turns_to_tokens(batch, v), {}

    @register_estimator("maybe", MaybeConfig, optional=("extra",))
    def maybe_estimator(batch, config, inputs):
        return turns_to_tokens(batch, np.zeros(batch.traj.size)), {"had_extra": "extra" in inputs}

    def setup(trainer):
        trainer.setups = getattr(trainer, "setups", 0) + 1

    @register_input("bonus", setup=setup)
    def provide_bonus(trainer, trajs):
        calls.append([t.id for t in trajs])
        return {t.id: [float(i + k) for k in range(t.n_turns)] for i, t in enumerate(trajs)}, \
            {"bonus/calls": float(len(calls))}

    yield calls
    for name in ("bonus", "maybe"):
        unregister_estimator(name)
    for name in ("bonus", "extra"):
        unregister_input(name)


def test_estimators_without_needs_get_nothing_and_call_no_provider(user_parts):
    trajs = make_trajs(3, with_advantages=False)
    assert credit_inputs(SimpleNamespace(), "grpo", trajs) == (None, {})
    assert credit_inputs(SimpleNamespace(), make_config("gigpo"), trajs) == (None, {})
    assert user_parts == []


def test_a_user_input_reaches_a_user_estimator_by_name(user_parts):
    trajs = make_trajs(3, n_turns=2, with_advantages=False)
    trainer = SimpleNamespace()
    setup_inputs(trainer, "bonus")
    assert trainer.setups == 1
    inputs, metrics = credit_inputs(trainer, {"name": "bonus", "scale": 2.0}, trajs)
    assert list(inputs) == ["bonus"] and metrics == {"bonus/calls": 1.0}
    assert inputs["bonus"] == {"t0": [0.0, 1.0], "t1": [1.0, 2.0], "t2": [2.0, 3.0]}
    res = estimate([trajs], make_config({"name": "bonus", "scale": 2.0}), inputs)
    t1 = res.trajectories[1]
    # turn values 2*[1, 2] on turn 1's and turn 2's action tokens
    want = np.concatenate([np.zeros(len(t1.prompt_ids)),
                           *[np.r_[np.full(len(a), 2.0 * v), np.zeros(len(o))]
                             for v, a, o in zip([1.0, 2.0], t1.action_ids, t1.observation_ids)]])
    np.testing.assert_allclose(res.advantages[1], want)


def test_optional_inputs_are_provided_only_when_a_provider_exists(user_parts):
    trajs = make_trajs(2, with_advantages=False)
    assert credit_inputs(SimpleNamespace(), "maybe", trajs) == (None, {})
    register_input("extra")(lambda trainer, ts: ({t.id: [0.0] * t.n_turns for t in ts}, {}))
    inputs, _ = credit_inputs(SimpleNamespace(), "maybe", trajs)
    assert list(inputs) == ["extra"]
    assert estimate([trajs], "maybe", inputs).diagnostics["had_extra"] is True


def test_a_need_without_provider_is_a_config_error_naming_it(user_parts):
    unregister_input("bonus")
    (problem,) = input_problems("bonus")
    assert "credit=bonus: needs input 'bonus'" in problem and "register_input('bonus')" in problem
    assert "probe_logprob" in problem and "logratio_sum" in problem  # the registered ones
    with pytest.raises(ConfigError, match="needs input 'bonus'"):
        credit_inputs(SimpleNamespace(), "bonus", make_trajs(1, with_advantages=False))
    with pytest.raises(ConfigError, match="needs input 'bonus'"):
        setup_inputs(SimpleNamespace(), "bonus")
    assert input_problems("igpo") == [] and input_problems("oprl") == []


def test_register_input_refuses_a_second_provider_for_one_name():
    with pytest.raises(ConfigError, match="'probe_logprob' is already provided by "
                                          "creditgym.trainers.credit_inputs.probe_logprob"):
        register_input("probe_logprob")(lambda trainer, trajs: ({}, {}))
    assert PROVIDERS["probe_logprob"].provide.__module__ == "creditgym.trainers.credit_inputs"


def test_logratio_sum_sets_up_a_prm_copy_and_takes_one_dpo_step():
    from creditgym.trainers.config import TrainConfig

    model = tiny_model(0)
    trainer = SimpleNamespace(model=model, cfg=TrainConfig(), credit=make_config("oprl"),
                              pad_id=PAD)
    setup_inputs(trainer, "oprl")
    assert trainer.prm is not model
    before = [p.detach().clone() for p in trainer.prm.parameters()]
    policy_before = [p.detach().clone() for p in model.parameters()]
    trajs = make_trajs(4, with_advantages=False, n_turns=2)
    for i, t in enumerate(trajs):  # one group with two successes and two failures: 4 pairs
        t.metrics["success"] = float(i % 2)
    inputs, metrics = credit_inputs(trainer, trainer.credit, trajs)
    assert list(inputs) == ["logratio_sum"]
    assert {k: len(v) for k, v in inputs["logratio_sum"].items()} == {t.id: 2 for t in trajs}
    assert np.isfinite(metrics["prm/dpo_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.prm.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(policy_before, model.parameters()))
    # the log-ratios feed OPRL directly
    assert np.isfinite(estimate([trajs], trainer.credit, inputs).diagnostics["dpo_loss"])


def test_probe_logprob_scores_gold_answers_through_the_trainers_backend(tiny_model_dir):
    from creditgym.agents.chat import ChatRenderer
    from creditgym.agents.hf_backend import TransformersBackend
    from creditgym.credit.igpo_probe import ProbeFormat, probe_logprobs
    from creditgym.trajectory import Trajectory

    with TransformersBackend(tiny_model_dir, seed=0) as backend:
        renderer = ChatRenderer(backend.tokenizer)
        enc = renderer.encode
        actions = [enc("<search> city </search>"), enc("<answer> x")]
        trajs = [Trajectory(id=f"p{i}", group="g", task={"question": "q", "golden_answers": [g]},
                            prompt_ids=enc("Who founded the city?"), action_ids=actions,
                            action_logprobs=[[0.0] * len(a) for a in actions],
                            observation_ids=[enc("<information>Doc</information>"), []],
                            rewards=[0.0, 1.0], anchors=[None, None], valid=[True, True])
                 for i, g in enumerate(["Vabrubam", "Rome"])]
        trainer = SimpleNamespace(renderer=renderer, backend=backend)
        inputs, _ = credit_inputs(trainer, "igpo", trajs)
        fmt = ProbeFormat(context_suffix="", answer_prefix="<answer>", answer_suffix="</answer>")
        want = probe_logprobs(trajs, enc, backend.score, fmt=fmt)
        assert list(inputs) == ["probe_logprob"]
        for t, w in zip(trajs, want):
            np.testing.assert_allclose(inputs["probe_logprob"][t.id], w, rtol=1e-12)
            assert len(w) == t.n_turns and np.all(np.asarray(w) < 0)
        # different golds give different probes, and a trainer's own probe format is used
        assert inputs["probe_logprob"]["p0"] != inputs["probe_logprob"]["p1"]
        trainer.probe_format = ProbeFormat()
        other, _ = credit_inputs(trainer, "igpo", trajs)
        assert other["probe_logprob"]["p0"] != inputs["probe_logprob"]["p0"]
