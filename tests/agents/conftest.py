"""Shared agent-test fixtures: one tiny local causal LM per test session, built offline.

``tiny_model_dir`` is a Hugging Face folder (tokenizer with a ChatML template + a 2-layer Llama)
trained on a small built-in world's corpus, its questions and Search-R1-style ChatML transcripts,
so every tag the agents use is in the data. Load it with ``AutoTokenizer.from_pretrained`` /
``AutoModelForCausalLM.from_pretrained`` or pass it to ``TransformersBackend``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_WORLD_DOCUMENTS = 300
"""Documents in the world whose text trains the session's tiny tokenizer."""


def tiny_training_texts(num_documents: int = TINY_WORLD_DOCUMENTS) -> list[str]:
    """World documents, questions and ChatML agent transcripts (every tag appears)."""
    from creditgym.envs.world import World, WorldConfig

    world = World.generate(WorldConfig(seed=0, num_documents=num_documents))
    texts = [doc["contents"] for doc in world.iter_documents()]
    tasks = world.questions("train")[:200]
    texts += [task.question for task in tasks]
    for i, task in enumerate(tasks):
        answer = task.golden_answers[0]
        first = task.metadata["chain"][0]["query"]
        doc = texts[i % len(world)]
        if i % 2 == 0:
            action = f"<think>I need to find {first}.</think>\n<search> {first} </search>"
        else:
            action = (
                f'<think>Look it up.</think>\n<tool_call>\n{{"name": "search", "arguments": '
                f'{{"query": "{first}"}}}}\n</tool_call>'
            )
        texts.append(
            "<|im_start|>system\nYou are a helpful assistant. Answer with <answer> and </answer>."
            "<|im_end|>\n"
            f"<|im_start|>user\n{task.question}<|im_end|>\n"
            f"<|im_start|>assistant\n{action}<|im_end|>\n"
            f"<|im_start|>user\n\n\n<information>Doc 1(Title: {first}) {doc}</information>\n\n"
            "<|im_end|>\n"
            f"<|im_start|>tool\n<result>{doc}</result><|im_end|>\n"
            f"<|im_start|>assistant\n<think>So it is {answer}.</think>\n<answer> {answer} </answer>"
            "<|im_end|>\n"
            f"<goal>{task.question}</goal> <judge>correct</judge>"
        )
    return texts


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama + byte-level BPE tokenizer with a ChatML template, saved as an HF folder."""
    from creditgym.agents.tiny import TinyModelConfig, build_tiny_model

    out = tmp_path_factory.mktemp("tiny-model") / "model"
    return build_tiny_model(out, tiny_training_texts(), TinyModelConfig(seed=0))
