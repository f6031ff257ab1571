"""Token-in/token-out deltas over the tiny model's real ChatML template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from creditgym.agents.chat import ChatRenderer, ChatTemplateError


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def conversation():
    return [{"role": "system", "content": "Answer the question."},
            {"role": "user", "content": "Where was Zego Breigo born?"}]


def test_prompt_is_the_template_with_generation_prompt(tok):
    r = ChatRenderer(tok)
    ids = r.prompt_ids(conversation())
    assert tok.decode(ids) == tok.apply_chat_template(conversation(), tokenize=False,
                                                      add_generation_prompt=True)


@pytest.mark.parametrize("ends_turn", [True, False])
def test_running_ids_equal_a_fresh_render(tok, ends_turn):
    r = ChatRenderer(tok)
    msgs = conversation()
    running = r.prompt_ids(msgs)
    action_text = "<think>search it</think><search> Zego Breigo </search>"
    action = r.encode(action_text) + ([tok.convert_tokens_to_ids("<|im_end|>")] if ends_turn else [])
    assert r.assistant_text(action) == action_text
    obs = "\n\n<information>Doc 1(Title: Zego Breigo) Zego Breigo was born in Vadrud.</information>\n\n"
    running += action + r.observation_ids(obs, action)
    msgs += [{"role": "assistant", "content": action_text}, {"role": "user", "content": obs}]
    assert r.first_mismatch(running, msgs) is None
    # and a mismatch is reported where it is
    broken = list(running)
    broken[-3] = (broken[-3] + 1) % len(tok)
    assert r.first_mismatch(broken, msgs).position == len(running) - 3


def test_inline_mode_appends_raw_observation_ids(tok):
    r = ChatRenderer(tok, observation_mode="inline")
    assert r.observation_ids("<information>x</information>", [1, 2]) == r.encode("<information>x</information>")


def test_template_less_tokenizer_is_a_clear_error(tok):
    import copy

    bare = copy.deepcopy(tok)
    bare.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        ChatRenderer(bare)
