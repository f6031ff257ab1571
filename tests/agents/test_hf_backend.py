"""TransformersBackend on a real tiny Llama: log-probs agree with teacher-forced scoring whatever
the batch, sampling is reproducible, each sequence stops on its own, weights can be swapped."""

from __future__ import annotations

import asyncio

import pytest
import torch

from creditgym.agents.backend import SamplingParams, TrainablePolicyBackend
from creditgym.agents.hf_backend import TransformersBackend
from creditgym.errors import ConfigError

GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    with TransformersBackend(tiny_model_dir, max_batch_size=3) as b:
        yield b


@pytest.fixture(scope="module")
def prompts(backend):
    tok = backend.tokenizer
    chats = [
        [{"role": "user", "content": "In which city is Motreibosh Union headquartered?"}],
        [
            {"role": "system", "content": "Answer with <answer>."},
            {"role": "user", "content": "Wer gründete 你好 🙂?"},
        ],
        [{"role": "user", "content": "Hi"}],
    ]
    rendered = [
        tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats
    ]
    return [tok.encode(t, add_special_tokens=False) for t in rendered] + [
        tok.encode("a", add_special_tokens=False)
    ]


def _teacher_forced(backend, prompt, generated, temperature=1.0):
    """log_softmax(logits / T) of each generated token from one unpadded full forward pass."""
    with torch.no_grad():
        logits = backend.model(torch.tensor([prompt + generated])).logits[0].float()
    lps = torch.log_softmax(logits[len(prompt) - 1 : -1] / temperature, dim=-1)
    return lps.gather(-1, torch.tensor(generated)[:, None]).squeeze(-1).tolist()


def test_is_a_trainable_policy_backend(backend):
    assert isinstance(backend, TrainablePolicyBackend)
    assert backend.eos_token_ids == (0, 2)
    assert backend.model.dtype == torch.float32 and backend.device.type == "cpu"


def test_generate_logprobs_equal_score_in_a_mixed_length_batch(backend, prompts):
    assert len({len(p) for p in prompts}) == len(prompts)  # padding really happens
    out = backend.generate(prompts, SamplingParams(max_new_tokens=16, temperature=1.0, seed=3))
    scored = backend.score(prompts, [c.token_ids for c in out])
    for prompt, completion, lps in zip(prompts, out, scored):
        assert len(completion.token_ids) == len(completion.logprobs) == len(lps) > 0
        assert completion.logprobs == pytest.approx(lps, abs=1e-4)
        assert completion.logprobs == pytest.approx(
            _teacher_forced(backend, prompt, completion.token_ids), abs=1e-4
        )


def test_logprobs_are_tempered_before_truncation(backend, prompts):
    sampling = SamplingParams(max_new_tokens=8, temperature=0.7, top_k=50, top_p=0.9, seed=1)
    for prompt, c in zip(prompts, backend.generate(prompts, sampling)):
        assert c.logprobs == pytest.approx(
            _teacher_forced(backend, prompt, c.token_ids, 0.7), abs=1e-4
        )


def test_greedy_does_not_depend_on_the_batch(backend, prompts, tiny_model_dir):
    together = backend.generate(prompts, GREEDY)
    alone = [backend.generate([p], GREEDY)[0] for p in prompts]
    with TransformersBackend(tiny_model_dir, max_batch_size=64) as wide:
        one_batch = wide.generate(prompts[::-1], GREEDY)[::-1]
    for a, b, c in zip(together, alone, one_batch):
        assert a.token_ids == b.token_ids == c.token_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
        assert a.logprobs == pytest.approx(c.logprobs, abs=1e-5)
        assert a.finish_reason == "length" and len(a.token_ids) == 12
    # Greedy log-probs are at temperature 1 and belong to the most likely token.
    assert together[0].logprobs == pytest.approx(
        _teacher_forced(backend, prompts[0], together[0].token_ids), abs=1e-4
    )


def test_seeds_reproduce_samples(backend, prompts):
    sampling = SamplingParams(max_new_tokens=10, temperature=1.0, seed=7)
    first = [c.token_ids for c in backend.generate(prompts, sampling)]
    assert first == [c.token_ids for c in backend.generate(prompts, sampling)]
    other = [
        c.token_ids for c in backend.generate(prompts, SamplingParams(max_new_tokens=10, seed=8))
    ]
    assert other != first


def test_top_k_one_and_tiny_top_p_are_greedy(backend, prompts):
    greedy = [c.token_ids for c in backend.generate(prompts, GREEDY)]
    top_k = SamplingParams(max_new_tokens=12, temperature=1.0, top_k=1, seed=0)
    top_p = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=1e-6, seed=0)
    assert [c.token_ids for c in backend.generate(prompts, top_k)] == greedy
    assert [c.token_ids for c in backend.generate(prompts, top_p)] == greedy


def test_stop_token_ids_stop_each_sequence_independently(backend, prompts):
    free = [c.token_ids for c in backend.generate(prompts, GREEDY)]
    stop_id = next(
        t for t in free[0][3:] if t not in free[0][:3]
    )  # first seen in row 0 after 3 tokens
    out = backend.generate(
        prompts, SamplingParams(max_new_tokens=12, temperature=0.0, stop_token_ids=(stop_id,))
    )
    for ids, c in zip(free, out):
        if stop_id in ids:
            cut = ids.index(stop_id) + 1
            assert (c.token_ids, c.finish_reason) == (ids[:cut], "stop")  # the stop token is kept
        else:
            assert (c.token_ids, c.finish_reason) == (ids, "length")
    assert out[0].finish_reason == "stop" and len(out[0].token_ids) >= 4
    assert any(c.finish_reason == "length" for c in out) or len({len(c.token_ids) for c in out}) > 1


def test_stop_strings_are_found_in_decoded_text_and_kept(backend, prompts):
    free = backend.generate(prompts, GREEDY)
    decode = backend._decode
    # Stop strings spanning three whole tokens (the matcher must look back past the newest one)
    # and a suffix of such a span, taken from rows 1 and 0, avoiding split UTF-8 characters.
    spans = [
        (r, k)
        for r in (1, 0)
        for k in range(2, 8)
        if "\ufffd" not in decode(free[r].token_ids[k : k + 3])
    ]
    (r1, k1), (r0, k0) = spans[0], next(s for s in spans if s[0] != spans[0][0])
    stops = (
        decode(free[r1].token_ids[k1 : k1 + 3]),
        decode(free[r0].token_ids[k0 : k0 + 3])[-3:],
        "@@never@@",
    )
    out = backend.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0.0, stop=stops))
    for f, c in zip(free, out):
        # Reference: the shortest prefix whose full decoded text contains a stop string.
        cut = next(
            (j for j in range(1, 13) if any(s in decode(f.token_ids[:j]) for s in stops)), None
        )
        expected = f.token_ids[:cut] if cut else f.token_ids
        assert c.token_ids == expected and c.finish_reason == ("stop" if cut else "length")
        assert c.text == decode(c.token_ids)
    assert out[r1].finish_reason == out[r0].finish_reason == "stop"
    assert any(s in out[r1].text for s in stops)


def test_end_of_sequence_ids_stop_generation_unless_disabled(tiny_model_dir, prompts):
    with TransformersBackend(tiny_model_dir, stop_at_eos=False) as b:
        free = b.generate(prompts[:1], GREEDY)[0].token_ids
        b.model.generation_config.eos_token_id = [free[2]]  # pretend this token ends a turn
        assert b.generate(prompts[:1], GREEDY)[0].token_ids == free
    with TransformersBackend(tiny_model_dir) as b:
        b.model.generation_config.eos_token_id = [free[2]]
        c = b.generate(prompts[:1], GREEDY)[0]
        assert c.token_ids == free[: free.index(free[2]) + 1] and c.finish_reason == "stop"


def test_max_new_tokens_and_context_budget(tiny_model_dir, prompts):
    with TransformersBackend(tiny_model_dir, max_context=len(prompts[0]) + 5) as b:
        short, long_ = [1, 5, 9], prompts[0] + [7, 7, 7, 7, 7, 7]
        out = b.generate(
            [short, prompts[0], long_], SamplingParams(max_new_tokens=9, temperature=1.0, seed=0)
        )
        assert [len(c.token_ids) for c in out] == [9, 5, 0]
        assert [c.finish_reason for c in out] == ["length"] * 3 and out[2].logprobs == []
        empty = b.generate([short], SamplingParams(max_new_tokens=0))
        assert (empty[0].token_ids, empty[0].finish_reason) == ([], "length")


def test_unicode_prompt_text_and_completion_text(backend):
    tok = backend.tokenizer
    text = "Ünïcödé 🙂 日本語 <think>"
    prompt = tok.encode(text, add_special_tokens=False)
    assert tok.decode(prompt) == text
    c = backend.generate([prompt], SamplingParams(max_new_tokens=6, seed=0))[0]
    assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
    assert c.extra["prompt_tokens"] == len(prompt)


def test_score_is_batch_independent_and_handles_empty_continuations(backend, prompts):
    conts = [[5, 6, 7], [], [9] * 20, [3]]
    together = backend.score(prompts, conts)
    assert together[1] == [] and [len(x) for x in together] == [3, 0, 20, 1]
    for p, c, lps in zip(prompts, conts, together):
        if c:
            assert backend.score([p], [c])[0] == pytest.approx(lps, abs=1e-5)
            assert lps == pytest.approx(_teacher_forced(backend, p, c), abs=1e-4)
            assert all(lp <= 0 for lp in lps)


def test_load_weights_swaps_the_policy(tiny_model_dir, prompts):
    with TransformersBackend(tiny_model_dir) as b:
        original = {k: v.clone() for k, v in b.model.state_dict().items()}
        before = b.generate(prompts, GREEDY)
        b.load_weights(original)
        assert [c.token_ids for c in b.generate(prompts, GREEDY)] == [c.token_ids for c in before]
        noise = torch.Generator().manual_seed(0)
        perturbed = {
            k: v + 0.5 * torch.randn(v.shape, generator=noise) for k, v in original.items()
        }
        b.load_weights(perturbed)
        after = b.generate(prompts, GREEDY)
        assert [c.token_ids for c in after] != [c.token_ids for c in before]
        assert after[0].extra["weights_version"] == before[0].extra["weights_version"] + 2
        with pytest.raises(ValueError, match="missing .*lm_head.weight"):
            b.load_weights({k: v for k, v in original.items() if k != "lm_head.weight"})
        with pytest.raises(ValueError, match="unexpected .*module.lm_head.weight"):
            b.load_weights({**original, "module.lm_head.weight": original["lm_head.weight"]})


def test_model_object_and_explicit_tokenizer(tiny_model_dir, prompts, backend):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()  # a trainer's live model
    with TransformersBackend(model, tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir)) as b:
        assert b.model is model
        assert [c.token_ids for c in b.generate(prompts, GREEDY)] == [
            c.token_ids for c in backend.generate(prompts, GREEDY)
        ]
        assert model.training  # generation ran in eval mode and left the mode as it was


def test_agenerate_runs_off_the_event_loop_with_unchanged_results(backend, prompts):
    seeded = SamplingParams(max_new_tokens=6, seed=11)
    ticks_while_generating = []

    async def generate_and_count_ticks():
        state = {"generating": True, "ticks": 0}

        async def ticker():
            while state["generating"]:
                state["ticks"] += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())  # first runs once this coroutine awaits
        out = await backend.agenerate(prompts, SamplingParams(max_new_tokens=32, seed=0))
        state["generating"] = False
        await task
        ticks_while_generating.append(state["ticks"])
        return out

    async def main():
        return await asyncio.gather(
            *(backend.agenerate([p], GREEDY) for p in prompts),
            backend.agenerate(prompts, seeded),
            backend.agenerate([[10**6]], GREEDY),  # a bad prompt fails only its own call
            generate_and_count_ticks(),
            return_exceptions=True,
        )

    *results, bad, _ = asyncio.run(main())
    assert isinstance(bad, ValueError) and "vocabulary" in str(bad)
    assert ticks_while_generating[0] > 0  # the loop kept running while the model worked
    sync = backend.generate(prompts, GREEDY)
    assert [r[0].token_ids for r in results[:-1]] == [c.token_ids for c in sync]
    assert [c.token_ids for c in results[-1]] == [
        c.token_ids for c in backend.generate(prompts, seeded)
    ]


def test_bad_inputs_are_clear_errors(tiny_model_dir, backend):
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        backend.generate([[1, 10**6]], GREEDY)
    with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
        backend.generate([[1], []], GREEDY)
    with pytest.raises(ConfigError, match="temperature"):
        backend.generate([[1]], SamplingParams(temperature=-1))
    with pytest.raises(ValueError, match="one continuation per prefix"):
        backend.score([[1]], [])
    with pytest.raises(ConfigError, match="could not load"):
        TransformersBackend(tiny_model_dir / "missing")
    b = TransformersBackend(tiny_model_dir)
    b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.generate([[1]], GREEDY)
