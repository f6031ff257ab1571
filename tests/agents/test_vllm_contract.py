"""The vLLM calls VLLMBackend and the trainer make, checked against the installed vLLM.

These need vLLM installed but no GPU, so they run on a CPU machine in the optional environment
``./dev vllm-contract`` builds (vLLM's CUDA wheel imports without a GPU); in the project's own
environment, which has no vLLM, they skip. Everything that can be built without a GPU is built
for real (the sampling parameters pass vLLM's own validation); the rest is checked by name and
signature, including vLLM's rules for a worker extension.
"""

from __future__ import annotations

import inspect
import typing

import pytest

from creditgym.agents.backend import SamplingParams
from creditgym.agents.vllm_backend import (
    WORKER_EXTENSION,
    WeightLoadingExtension,
    engine_options,
    sampling_params,
    scoring_params,
)

vllm = pytest.importorskip("vllm")


def parameters(func) -> set[str]:
    return set(inspect.signature(func).parameters)


def test_the_llm_methods_take_the_arguments_the_backend_passes():
    llm = vllm.LLM
    assert {"sampling_params", "use_tqdm"} <= parameters(llm.generate)
    assert "args" in parameters(llm.collective_rpc)
    assert "level" in parameters(llm.sleep)
    assert "tags" in parameters(llm.wake_up)
    assert callable(llm.reset_prefix_cache) and callable(llm.get_tokenizer)
    # reset_prefix_cache() and get_tokenizer() are called with no argument
    for func in (llm.reset_prefix_cache, llm.get_tokenizer):
        required = [p for p in list(inspect.signature(func).parameters.values())[1:]
                    if p.default is inspect.Parameter.empty]
        assert not required, f"{func.__qualname__} now needs {required}"


def test_the_engine_options_the_trainer_sets_exist_with_the_values_it_gives():
    from vllm.engine.arg_utils import EngineArgs

    fields = EngineArgs.__dataclass_fields__
    for option in ("worker_extension_cls", "enable_sleep_mode", "logprobs_mode",
                   "gpu_memory_utilization", "max_model_len", "enforce_eager", "seed"):
        assert option in fields, f"EngineArgs.{option}"
    # the backend's log-prob definition: log_softmax(logits / T), as the transformers backend
    modes = typing.get_args(fields["logprobs_mode"].type)
    assert "processed_logprobs" in modes, modes


def test_the_engine_arguments_a_training_run_gives_build(tiny_model_dir):
    """What ``rollout.backend: vllm`` with ``vllm_sleep`` hands ``vllm.LLM`` (the trainer's
    options at their defaults) is accepted by vLLM's engine arguments."""
    from vllm.engine.arg_utils import EngineArgs

    from creditgym.agents.backends import vllm_training_options
    from creditgym.trainers.config import RolloutBackendConfig
    from creditgym.trainers.model_setup import rollout_engine_options

    r = RolloutBackendConfig(backend="vllm", vllm_sleep=True, max_model_len=512)
    options = engine_options(**vllm_training_options(rollout_engine_options(r), seed=0))
    args = EngineArgs(model=str(tiny_model_dir), **options)
    assert args.logprobs_mode == "processed_logprobs"
    assert args.worker_extension_cls == WORKER_EXTENSION and args.enable_sleep_mode


@pytest.mark.parametrize("sampling", [
    SamplingParams(),
    SamplingParams(max_new_tokens=12, temperature=0.0),
    SamplingParams(max_new_tokens=24, temperature=0.7, top_p=0.9, top_k=20,
                   stop=("</search>", "</answer>"), stop_token_ids=(2,), seed=3),
], ids=["defaults", "greedy", "everything-set"])
def test_the_generation_parameters_pass_vllm_validation(sampling):
    params = sampling_params(vllm, sampling, seed=11)
    assert (params.n, params.logprobs, params.max_tokens) == (1, 0, sampling.max_new_tokens)
    assert params.seed == 11
    assert list(params.stop) == list(sampling.stop)
    assert list(params.stop_token_ids) == list(sampling.stop_token_ids)
    assert params.include_stop_str_in_output and not params.skip_special_tokens


def test_the_scoring_parameters_ask_for_the_prompts_own_log_probs():
    params = scoring_params(vllm)
    assert params.prompt_logprobs == 0 and params.max_tokens == 1 and params.temperature == 1.0


def test_the_outputs_have_the_fields_the_backend_reads():
    from vllm.logprobs import Logprob
    from vllm.outputs import CompletionOutput, RequestOutput

    assert {"outputs", "prompt_logprobs"} <= parameters(RequestOutput)
    completion = set(getattr(CompletionOutput, "__dataclass_fields__", ()))
    assert {"token_ids", "logprobs", "finish_reason", "stop_reason", "text"} <= completion
    assert "logprob" in set(getattr(Logprob, "__dataclass_fields__", ()))


def test_the_worker_extension_resolves_and_does_not_clash_with_the_gpu_worker():
    from vllm.utils.import_utils import resolve_obj_by_qualname
    from vllm.v1.worker.gpu_worker import Worker

    assert resolve_obj_by_qualname(WORKER_EXTENSION) is WeightLoadingExtension
    # vLLM refuses an extension with an attribute the worker already has
    own = [a for a in dir(WeightLoadingExtension) if not a.startswith("__")]
    assert own and not [a for a in own if hasattr(Worker, a)]
    assert callable(Worker.get_model)  # how the extension reaches the model


@pytest.mark.parametrize("module, cls", [
    ("vllm.model_executor.models.llama", "LlamaForCausalLM"),
    ("vllm.model_executor.models.qwen2", "Qwen2ForCausalLM"),
])
def test_the_models_take_weights_by_keyword(module, cls):
    import importlib

    model = getattr(importlib.import_module(module), cls)
    assert "weights" in parameters(model.load_weights)


def test_close_finds_the_engine_shutdown():
    from vllm.v1.engine.core_client import EngineCoreClient
    from vllm.v1.engine.llm_engine import LLMEngine

    assert callable(EngineCoreClient.shutdown)
    init = inspect.getsource(LLMEngine.__init__)
    assert "self.engine_core" in init and "self.model_config" in init
