"""Tiny local models: exact tokenizer round trips, atomic tags, the ChatML template, determinism,
atomic saving, and loading back with plain transformers."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgym.agents.tiny import (
    IM_END,
    IM_START,
    SPECIAL_TOKENS,
    TAG_TOKENS,
    TinyModelConfig,
    build_tiny_model,
)
from creditgym.errors import ConfigError

SMALL = TinyModelConfig(
    vocab_size=600, hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1
)
TEXTS = [
    f"Document {i}: the city of Vrakos{i % 7} was founded in {1800 + i}. <think>x</think>"
    for i in range(80)
]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _digests(path) -> dict[str, str]:
    return {
        f: hashlib.sha256((path / f).read_bytes()).hexdigest() for f in sorted(os.listdir(path))
    }


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80))
def test_any_unicode_text_round_trips_exactly(tok, text):
    assert tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=False) == text


@pytest.mark.parametrize(
    "text",
    [
        "  two leading spaces",
        "tabs\tand\r\nCRLF\n\n",
        "emoji 🙂🏳️‍🌈 and 你好 and é (e\u0301)",
        "Ġ and Ċ literal",
        "\x00\x7f",
    ],
)
def test_awkward_text_round_trips(tok, text):
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_tags_are_atomic_and_survive_skip_special_tokens(tok):
    for tag in TAG_TOKENS:
        ids = tok.encode(f"a{tag}b", add_special_tokens=False)
        assert tok.convert_tokens_to_ids(tag) in ids
        assert len(tok.encode(tag, add_special_tokens=False)) == 1
    text = "<think>plan</think><search> q </search><|im_end|>"
    assert tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=True) == (
        "<think>plan</think><search> q </search>"
    )


def test_special_tokens_and_generation_config(tiny_model_dir, tok):
    from transformers import AutoModelForCausalLM

    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    assert tok.eos_token == IM_END and tok.pad_token == "<|endoftext|>"
    assert tok.encode(f"{IM_START}user", add_special_tokens=False)[0] == 1
    assert tok.encode("hello", add_special_tokens=True) == tok.encode(
        "hello", add_special_tokens=False
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.vocab_size == len(tok)
    assert model.config.eos_token_id == tok.eos_token_id
    assert tok.eos_token_id in model.generation_config.eos_token_id
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    logits = model(torch.tensor([tok.encode("The city of", add_special_tokens=False)])).logits
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()


def test_chat_template_is_chatml(tok):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who?"},
        {"role": "assistant", "content": "<search> x </search>"},
        {"role": "tool", "content": "<result>doc</result>"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho?<|im_end|>\n"
        "<|im_start|>assistant\n<search> x </search><|im_end|>\n"
        "<|im_start|>tool\n<result>doc</result><|im_end|>\n<|im_start|>assistant\n"
    )
    # Append-only: every shorter conversation renders to a prefix (what the rollout's deltas need).
    for k in range(1, len(messages)):
        assert text.startswith(tok.apply_chat_template(messages[:k], tokenize=False))
    generation_prompt = tok.apply_chat_template(
        messages[:2], tokenize=False, add_generation_prompt=True
    )
    assert generation_prompt + "<search> x </search><|im_end|>\n" == tok.apply_chat_template(
        messages[:3], tokenize=False
    )


def test_chat_template_tools_and_tool_calls(tok):
    tool = {
        "type": "function",
        "function": {"name": "search", "description": "Search.", "parameters": {}},
    }
    messages = [
        {"role": "user", "content": "Q"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": "search", "arguments": {"query": "Vrakos"}},
                }
            ],
        },
    ]
    text = tok.apply_chat_template(messages, tools=[tool], tokenize=False)
    system, rest = text.split("<|im_end|>\n", 1)
    assert system.startswith("<|im_start|>system\nYou are a helpful assistant.\n\n# Tools")
    assert json.dumps(tool) in system
    assert rest.endswith(
        '<|im_start|>assistant\n<tool_call>\n{"name": "search", "arguments": {"query": "Vrakos"}}'
        "\n</tool_call><|im_end|>\n"
    )
    with_system = tok.apply_chat_template(
        [{"role": "system", "content": "Mine."}] + messages, tools=[tool], tokenize=False
    )
    assert (
        with_system.startswith("<|im_start|>system\nMine.\n\n# Tools")
        and with_system.count("<|im_start|>system") == 1
    )


def test_chat_template_rejects_unknown_roles(tok):
    with pytest.raises(Exception, match="Unknown chat role"):
        tok.apply_chat_template([{"role": "robot", "content": "hi"}], tokenize=False)


def test_build_is_deterministic_and_seeded(tmp_path):
    rng_before = torch.get_rng_state()
    a = build_tiny_model(tmp_path / "a", TEXTS, SMALL)
    b = build_tiny_model(tmp_path / "b", iter(TEXTS), SMALL)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is left alone
    assert _digests(a) == _digests(b)
    c = build_tiny_model(tmp_path / "c", TEXTS, TinyModelConfig(**{**SMALL.__dict__, "seed": 1}))
    assert _digests(c)["tokenizer.json"] == _digests(a)["tokenizer.json"]
    assert _digests(c)["model.safetensors"] != _digests(a)["model.safetensors"]


def test_config_shapes_the_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = TinyModelConfig(
        vocab_size=500,
        hidden_size=48,
        intermediate_size=80,
        num_layers=3,
        num_heads=6,
        num_kv_heads=3,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        dtype="bfloat16",
    )
    path = build_tiny_model(tmp_path / "m", TEXTS * 3, config)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) <= 500 and model.config.vocab_size == len(tok)
    assert (model.config.num_hidden_layers, model.config.num_key_value_heads) == (3, 3)
    assert model.dtype == torch.bfloat16 and tok.model_max_length == 256
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


def test_existing_dir_needs_overwrite_and_failed_build_leaves_nothing(tmp_path):
    path = build_tiny_model(tmp_path / "m", TEXTS, SMALL)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_tiny_model(path, TEXTS, SMALL)

    def broken():
        yield from TEXTS[:10]
        raise KeyboardInterrupt  # a user's Ctrl-C in the middle of tokenizer training

    with pytest.raises(KeyboardInterrupt):
        build_tiny_model(tmp_path / "m", broken(), SMALL, overwrite=True)
    with pytest.raises(KeyboardInterrupt):
        build_tiny_model(tmp_path / "new", broken(), SMALL)
    assert sorted(os.listdir(tmp_path)) == ["m"]  # old model intact, no staging leftovers
    before = _digests(path)
    build_tiny_model(path, TEXTS, TinyModelConfig(**{**SMALL.__dict__, "seed": 5}), overwrite=True)
    assert _digests(path)["model.safetensors"] != before["model.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["m"]


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"vocab_size": 100}, "vocab_size"),
        ({"hidden_size": 30, "num_heads": 4}, "hidden_size"),
        ({"num_heads": 4, "num_kv_heads": 3}, "num_kv_heads"),
        ({"dtype": "int8"}, "dtype"),
        ({"num_layers": 0}, "num_layers"),
    ],
)
def test_bad_config_is_a_config_error(fields, match):
    with pytest.raises(ConfigError, match=match):
        TinyModelConfig(**fields)


def test_no_text_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no text"):
        build_tiny_model(tmp_path / "m", [], SMALL)
    with pytest.raises(ConfigError, match="must be strings"):
        build_tiny_model(tmp_path / "m", [b"bytes"], SMALL)
    assert os.listdir(tmp_path) == []
