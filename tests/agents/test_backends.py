"""The backend registry: built-ins by name, a user backend in a few lines, the trainer's checks.

Real parts only: the session's tiny transformers model, a real policy server on 127.0.0.1 for
the HTTP backend, and vLLM's real absence on this machine (the vllm entry is imported lazily).
"""

from __future__ import annotations

import importlib.util

import pytest

from creditgym.agents.backend import Completion, SamplingParams
from creditgym.agents.backends import (
    BACKENDS,
    TrainingPolicy,
    backend_problem,
    make_backend,
    make_training_backend,
    register_backend,
    trainable_backends,
    unregister_backend,
)
from creditgym.errors import ConfigError

GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0)
HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
            AutoTokenizer.from_pretrained(str(tiny_model_dir)))


def test_builtin_backends_are_registered_and_only_in_process_ones_train():
    assert list(BACKENDS)[:4] == ["transformers", "vllm", "openai", "http"]
    assert trainable_backends()[:2] == ["transformers", "vllm"]
    assert "openai" not in trainable_backends() and "http" not in trainable_backends()


def test_transformers_by_name_passes_its_options_and_generates(tiny_model_dir, tiny):
    _, tok = tiny
    prompt = tok("The river flows past")["input_ids"]
    with make_backend("transformers", model=tiny_model_dir, max_context=64, seed=0) as b:
        assert type(b).__name__ == "TransformersBackend" and b.max_context == 64
        (out,) = b.generate([prompt], GREEDY)
    assert out.finish_reason in ("stop", "length") and len(out.token_ids) == len(out.logprobs) > 0


def test_openai_and_http_reach_a_real_server_and_match_in_process(tiny_model_dir, tiny):
    from creditgym.agents.policy_server import BackgroundPolicyServer

    _, tok = tiny
    prompts = [tok(t)["input_ids"] for t in ("hello world", "<search> capital </search>")]
    with make_backend("transformers", model=tiny_model_dir) as local, \
            BackgroundPolicyServer(local, "tiny") as server:
        want = local.generate(prompts, GREEDY)
        for name in ("openai", "http"):
            with make_backend(name, url=server.url, model="tiny", retries=0) as remote:
                got = remote.generate(prompts, GREEDY)
            assert [g.token_ids for g in got] == [w.token_ids for w in want]


@pytest.mark.skipif(HAS_VLLM, reason="checks the message shown where vLLM is missing")
def test_vllm_is_imported_only_when_opened_and_says_how_to_install():
    from creditgym.agents.openai_backend import BackendError

    problem = backend_problem("vllm", training=True, label="rollout.backend")
    assert "vllm is not installed" in problem and "pip install 'creditgym[vllm]'" in problem
    assert "use one of transformers" in problem
    with pytest.raises(BackendError, match="pip install 'creditgym\\[vllm\\]'"):
        make_backend("vllm", model="any-folder")


def test_unknown_and_untrainable_names_are_clear_errors():
    with pytest.raises(ConfigError) as err:
        make_backend("sglang", model="x")
    assert "backend='sglang': unknown backend" in str(err.value)
    assert all(name in str(err.value) for name in BACKENDS)
    with pytest.raises(ConfigError, match="openai: this backend cannot be trained .* choose one "
                                          "of transformers, vllm"):
        make_training_backend("openai", TrainingPolicy(None, None, "unused"))
    assert backend_problem("transformers", training=True) is None
    assert backend_problem(3, training=True, label="rollout.backend").startswith(
        "rollout.backend=3: unknown backend")


class EchoBackend:
    """A user's backend: repeats the prompt's last token; holds the trainer's model."""

    def __init__(self, model=None, repeat: int = 2):
        self.model, self.repeat = model, repeat
        self.loaded: list[dict] = []

    def generate(self, prompts, sampling):
        return [Completion([p[-1]] * self.repeat, [0.0] * self.repeat, "length") for p in prompts]

    def score(self, prefixes, continuations):
        return [[0.0] * len(c) for c in continuations]

    def load_weights(self, state_dict):
        self.loaded.append(state_dict)

    def close(self):
        pass


@pytest.fixture
def echo():
    @register_backend("echo", trainer=lambda p: EchoBackend(p.model, p.options.get("repeat", 3)))
    def open_echo(repeat: int = 2):
        return EchoBackend(repeat=repeat)

    yield open_echo
    unregister_backend("echo")


def test_a_user_backend_registers_in_a_few_lines_and_trains(echo, tiny, tmp_path):
    from creditgym.trainers.config import TrainConfig, _model_problems
    from creditgym.trainers.model_setup import make_rollout_backend

    assert make_backend("echo", repeat=4).generate([[7, 9]], GREEDY)[0].token_ids == [9] * 4
    assert "echo" in trainable_backends()
    cfg = TrainConfig()
    cfg.rollout.backend = "echo"
    assert not [p for p in _model_problems(cfg) if "rollout.backend" in p]
    model, tok = tiny
    backend = make_rollout_backend(cfg, model, tok, tmp_path)
    assert isinstance(backend, EchoBackend) and backend.model is model
    with pytest.raises(ConfigError, match="'echo' is already registered"):
        register_backend("echo")(lambda: None)


def test_the_trainer_gets_the_configured_backend_over_its_own_model(tiny, tmp_path):
    from creditgym.trainers.config import TrainConfig
    from creditgym.trainers.model_setup import make_rollout_backend

    model, tok = tiny
    cfg = TrainConfig()
    backend = make_rollout_backend(cfg, model, tok, tmp_path)
    # generation uses the trained module itself: its weights are always the trainer's
    assert type(backend).__name__ == "TransformersBackend" and backend.model is model


def test_eval_opens_its_backends_through_the_registry(tiny_model_dir):
    from creditgym.evaluate import open_backend

    with open_backend(str(tiny_model_dir), None, seed=0) as b:
        assert type(b).__name__ == "TransformersBackend"
    with open_backend("tiny", "http://127.0.0.1:9") as b:  # nothing is contacted until used
        assert type(b).__name__ == "OpenAICompatibleBackend" and b.model == "tiny"
