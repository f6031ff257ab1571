"""Record real SearchEnv episodes as ``Trajectory`` objects, as a rollout would.

Token ids come from a small byte-level BPE tokenizer trained on the episode texts (a real
tokenizer, saved as a Hugging Face folder so ``replay html --tokenizer`` can load it); the
per-token log-probs are made up, since no model generated these actions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from creditgym.envs.world.expert import expert_action
from creditgym.trajectory import Trajectory

ENV_ID = "creditgym/Search-v0"
SEARCH_KWARGS = {"split": "test", "world_backend": "bm25s"}
"""Keyword arguments of the SearchEnv the tests record (the built-in world, bm25s index)."""

Policy = Callable[[object, int, str], str]


def expert(task, turn, obs):
    return expert_action(task, turn, obs)


def wrong_answer(task, turn, obs):
    return "<think>No idea.</think><answer>Nowhere at all</answer>"


def invalid_first(task, turn, obs):
    """An invalid action, then the expert (whose turn count starts one later)."""
    if turn == 0:
        return "I will just talk <about> it & not call a tool"
    return expert_action(task, turn - 1, obs if turn > 1 else task.question)


POLICIES: dict[str, Policy] = {"expert": expert, "wrong": wrong_answer, "invalid": invalid_first}


def build_tokenizer(env, folder: Path):
    """A byte-level BPE tokenizer (``tokenizers``) trained on the env's questions; ``.folder``
    is a Hugging Face tokenizer folder of it that ``AutoTokenizer.from_pretrained`` loads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = [t.question for t in env.tasks[:50]] + [
        "<search></search><answer></answer><information>Doc 1(Title: ) <think></think>"
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=600,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=["<|endoftext|>"],
        ),
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"})
    )
    tok.folder = folder
    return tok


def record_episode(
    env, task, policy: Policy, *, tid: str, group: str, tokenizer, seed: int = 0
) -> Trajectory:
    """Run one episode of ``env`` on ``task`` and record it."""
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False).ids
    obs, info = env.reset(seed=seed, options={"task": task})
    messages = [
        {"role": "system", "content": info["system_prompt"]},
        {"role": "user", "content": obs},
    ]
    rec: dict = {
        k: []
        for k in (
            "action_ids",
            "action_logprobs",
            "observation_ids",
            "rewards",
            "anchors",
            "valid",
            "actions",
            "observations",
            "turn_metrics",
            "tool_calls",
            "finish_reasons",
        )
    }
    anchor, turn, done = info["anchor"], 0, False
    while not done:
        action = policy(task, turn, obs)
        obs, reward, terminated, truncated, info = env.step(action)
        ids = encode(action)
        rec["action_ids"].append(ids)
        rec["action_logprobs"].append([-0.25 - 0.01 * i for i in range(len(ids))])
        rec["observation_ids"].append(encode(obs))
        rec["rewards"].append(reward)
        rec["anchors"].append(anchor)
        rec["valid"].append(info["valid"])
        rec["actions"].append(action)
        rec["observations"].append(obs)
        rec["turn_metrics"].append(info["metrics"])
        rec["tool_calls"].append(info["tool_calls"])
        rec["finish_reasons"].append("stop")
        anchor, turn, done = info["anchor"], turn + 1, terminated or truncated
    return Trajectory(
        id=tid,
        group=group,
        task=task.to_dict(),
        prompt_ids=encode(messages[0]["content"] + messages[1]["content"]),
        metrics=dict(info["metrics"]),
        env_id=ENV_ID,
        env_kwargs=dict(SEARCH_KWARGS),
        seed=seed,
        prompt_messages=messages,
        terminated=terminated,
        truncated=truncated,
        **rec,
    )


def record_groups(env, tokenizer, n_tasks: int = 4) -> list[Trajectory]:
    """``n_tasks`` groups, each the task rolled out once per policy in ``POLICIES``."""
    out = []
    for g, task in enumerate(env.tasks[:n_tasks]):
        for name, policy in POLICIES.items():
            out.append(
                record_episode(
                    env,
                    task,
                    policy,
                    tid=f"g{g}-{name}",
                    group=f"g{g}",
                    tokenizer=tokenizer,
                    seed=g,
                )
            )
    return out
