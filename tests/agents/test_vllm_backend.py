"""VLLMBackend: a clear error where vLLM is missing; on a CUDA machine with vLLM, the same greedy
ids and log-probs as the transformers backend, scoring, and weight updates that take effect."""

from __future__ import annotations

import importlib.util

import pytest

from creditgym.agents.backend import SamplingParams
from creditgym.agents.openai_backend import BackendError
from creditgym.errors import CreditGymError

GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_without_vllm_construction_says_how_to_install(tiny_model_dir):
    from creditgym.agents.vllm_backend import VLLMBackend

    with pytest.raises(BackendError) as err:
        VLLMBackend(str(tiny_model_dir))
    assert isinstance(err.value, CreditGymError)
    assert "pip install 'creditgym[vllm]'" in str(err.value)
    assert "NVIDIA GPU" in str(err.value)


@pytest.fixture(scope="module")
def vllm_backend(tiny_model_dir):
    pytest.importorskip("vllm")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU")
    from creditgym.agents.vllm_backend import VLLMBackend

    with VLLMBackend(
        str(tiny_model_dir),
        dtype="float32",
        gpu_memory_utilization=0.3,
        enforce_eager=True,
        max_model_len=512,
    ) as backend:
        yield backend


@pytest.fixture(scope="module")
def hf_backend(tiny_model_dir):
    from creditgym.agents.hf_backend import TransformersBackend

    with TransformersBackend(tiny_model_dir, device="cuda", dtype="float32") as backend:
        yield backend


@pytest.mark.gpu
def test_greedy_matches_transformers(vllm_backend, hf_backend):
    prompts = [hf_backend.tokenizer(t)["input_ids"] for t in ("hello world", "The river", "a b")]
    got = vllm_backend.generate(prompts, GREEDY)
    want = hf_backend.generate(prompts, GREEDY)
    for g, w in zip(got, want):
        assert g.token_ids == w.token_ids and g.finish_reason == w.finish_reason
        assert all(abs(a - b) <= 1e-3 for a, b in zip(g.logprobs, w.logprobs))


@pytest.mark.gpu
def test_score_matches_transformers(vllm_backend, hf_backend):
    prefix = hf_backend.tokenizer("hello world")["input_ids"]
    cont = hf_backend.generate([prefix], GREEDY)[0].token_ids
    got = vllm_backend.score([prefix, prefix], [cont, []])
    want = hf_backend.score([prefix], [cont])[0]
    assert got[1] == [] and len(got[0]) == len(cont)
    assert all(abs(a - b) <= 1e-3 for a, b in zip(got[0], want))


@pytest.mark.gpu
def test_load_weights_changes_the_policy(vllm_backend, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    prompt = [[5, 6, 7, 8]]
    before = vllm_backend.generate(prompt, GREEDY)[0]
    # halving the final norm halves every logit: a different distribution, whatever is tied
    state = {k: v * 0.5 if k == "model.norm.weight" else v for k, v in model.state_dict().items()}
    assert "model.norm.weight" in state
    vllm_backend.load_weights(state)
    after = vllm_backend.generate(prompt, GREEDY)[0]
    assert vllm_backend.weights_version == 1
    assert any(abs(a - b) > 1e-3 for a, b in zip(after.logprobs, before.logprobs))
    vllm_backend.load_weights(model.state_dict())  # back to the original policy
    restored = vllm_backend.generate(prompt, GREEDY)[0]
    assert restored.token_ids == before.token_ids


@pytest.mark.gpu
def test_streamed_weights_in_small_chunks_equal_a_state_dict(vllm_backend, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    prompt = [[5, 6, 7, 8]]
    vllm_backend.load_weights(model.state_dict())
    want = vllm_backend.generate(prompt, GREEDY)[0]
    # one tensor at a time, a chunk per tensor: what a sharded trainer streams
    n = vllm_backend.load_weights(((k, v) for k, v in model.state_dict().items()), chunk_mb=1e-6)
    assert n == len(model.state_dict())
    got = vllm_backend.generate(prompt, GREEDY)[0]
    assert got.token_ids == want.token_ids

