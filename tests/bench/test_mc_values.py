"""Monte-Carlo turn values on the real KeyDoor environment: a scripted breadth-first expert
plugged in as a backend gives exactly the hand-computed values; a real tiny transformers policy
gives values that depend only on (seed, trajectory, turn, continuation), not on run order; the
budget cuts the work; ``creditgym credit-bench --mc-model`` writes ``spearman_mc``."""

from __future__ import annotations

import itertools
import json
import re

import pytest
import torch

from creditgym.agents.backend import Completion, SamplingParams
from creditgym.agents.chat import ChatRenderer
from creditgym.agents.rollout import RolloutConfig, rollout
from creditgym.bench.credit_bench import MC_KEY
from creditgym.bench.mc_values import MCSettings, attach, estimate_mc_values, turn_values
from creditgym.cli import main
from creditgym.envs.demonstration import call_text
from creditgym.envs.examples.keydoor import PASSWORDS, KeyDoorEnv, load_layout, solve
from creditgym.errors import ConfigError
from creditgym.replay.trust import EnvPolicy

ENV_ID = "creditgym/KeyDoor-v0"
EXPERT_KWARGS = {"num_tasks": 2, "config": {"max_turns": 12}}
"""Task 0 is solved in 10 turns (answer included): 12 turns leave room for two wasted ones."""
RANDOM_KWARGS = {"num_tasks": 2, "config": {"max_turns": 3}}
BUMP = "<move>south</move>"  # task 0 starts at the south wall: a wasted turn


class ScriptedKeyDoor:
    """A backend-like KeyDoor policy: ``script`` for the first turns, then the breadth-first
    expert, which reads the task (the map in the prompt) and the state (the last observation)
    from the prompt's text, so it continues any mid-episode state."""

    def __init__(self, tokenizer, tasks, script=()):
        self.tokenizer, self.tasks, self.script = tokenizer, list(tasks), list(script)

    def generate(self, prompts, sampling: SamplingParams) -> list[Completion]:
        out = []
        for ids in prompts:
            text = self.tokenizer.decode(ids)
            turn = text.count("<|im_start|>assistant") - 1
            action = self.script[turn] if turn < len(self.script) else self.expert(text)
            tokens = self.tokenizer.encode(action, add_special_tokens=False)
            out.append(Completion(tokens, [0.0] * len(tokens), "stop", text=action))
        return out

    def expert(self, text: str) -> str:
        task = next(t for t in self.tasks if t.question in text)
        layout = load_layout(task.metadata)
        last = text[text.rindex("You are in room"):]
        x, y = map(int, re.match(r"You are in room \((\d+), (\d+)\)", last).groups())
        state = ((x, y), "You carry the key." in last, "The door is open." in last)
        plan = solve(layout, state)
        if not plan:
            return call_text("xml", "answer", {"answer": layout["password"]})
        tool, arg = plan[0]
        return call_text("xml", tool, {"direction": arg} if tool == "move" else {})

    def score(self, prefixes, continuations):
        return [[0.0] * len(c) for c in continuations]

    def close(self) -> None:
        pass


def record(backend, renderer, kwargs, tasks, *, group_size=1, seed=0, max_new_tokens=32):
    env = KeyDoorEnv(**kwargs)
    config = RolloutConfig(group_size=group_size, batching="rounds", sampling=SamplingParams(
        max_new_tokens=max_new_tokens, stop=tuple(env.stop_strings), seed=seed))
    trajs = rollout(lambda: EnvPolicy().make_env(ENV_ID, kwargs), tasks, backend, renderer,
                    config, seed=seed, env_id=ENV_ID, env_kwargs=kwargs)
    assert all(t.error is None for t in trajs)
    return trajs


def bigram_policy(folder, tokenizer, follows: dict) -> None:
    """Make the model in ``folder`` a fixed bigram policy: after token ``a`` the next token is
    uniform over ``follows[a]`` (``follows[None]``: after any other token). The blocks add
    nothing (zero output projections), so the residual stream is the current token's embedding,
    a one-hot of its row in ``follows``; the output head maps each row to its next tokens."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder))
    rows = {a: i for i, a in enumerate(follows)}
    scale = 30.0 / model.config.hidden_size ** 0.5  # logit 30 vs 0: others never drawn
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        embed.zero_()
        head.zero_()
        embed[:, rows[None]] = 1.0
        for a, nexts in follows.items():
            if a is not None:
                embed[a].zero_()
                embed[a, rows[a]] = 1.0
            head[nexts, rows[a]] = scale
    model.save_pretrained(str(folder))


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    """A tiny model whose policy is: write ``</answer>`` (an invalid action: a wasted turn) or
    ``<answer>``, then one of the two tasks' passwords, uniformly; so each turn answers right
    with probability 1/4 and success depends on the turns left."""
    from transformers import AutoTokenizer

    from creditgym.agents.tiny import TinyModelConfig, build_tiny_model

    env = KeyDoorEnv(**RANDOM_KWARGS)
    texts = [t.question for t in env.tasks] + [f"<answer>{p}</answer>" for p in PASSWORDS] * 4
    texts += [f"{env.reset(seed=0, options={'task': t})[0]} {BUMP} <pick_up></pick_up>"
              for t in env.tasks] * 3
    folder = build_tiny_model(tmp_path_factory.mktemp("mc") / "policy", texts, TinyModelConfig(
        vocab_size=500, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
        num_kv_heads=1, tie_word_embeddings=False), progress=False)
    tok = AutoTokenizer.from_pretrained(str(folder))
    open_, close = tok.convert_tokens_to_ids(["<answer>", "</answer>"])
    words = [tok.encode(t.metadata["password"], add_special_tokens=False) for t in env.tasks]
    assert all(len(w) == 1 for w in words), words  # each password one token
    words = [w[0] for w in words]
    bigram_policy(folder, tok, {None: [open_, close], open_: words,
                                **{w: [close] for w in words}})
    return folder


@pytest.fixture(scope="module")
def backend(policy_dir):
    from creditgym.agents.backends import make_backend

    b = make_backend("transformers", model=str(policy_dir), seed=0)
    yield b
    b.close()


@pytest.fixture(scope="module")
def expert_records(backend):
    """Task 0 recorded twice: three wasted turns, then the expert (12 turns, out of turns
    one move short of the vault: reward 0); one move north, then a wrong answer."""
    renderer = ChatRenderer(backend.tokenizer)
    task = KeyDoorEnv(**EXPERT_KWARGS).tasks[0]
    out = []
    for script in ([BUMP] * 3, ["<move>north</move>", "<answer>nope</answer>"]):
        scripted = ScriptedKeyDoor(backend.tokenizer, [task], script)
        (t,) = record(scripted, renderer, EXPERT_KWARGS, [task])
        out.append(t)
    return out


def expert_values(records, tokenizer, clock=None, **settings):
    expert = ScriptedKeyDoor(tokenizer, KeyDoorEnv(**EXPERT_KWARGS).tasks)
    return estimate_mc_values(records, expert, ChatRenderer(tokenizer), EnvPolicy(),
                              MCSettings(k=2, max_new_tokens=32, **settings),
                              **({"clock": clock} if clock else {}))


def task_shortest(traj) -> int:
    return traj.task["metadata"]["shortest"]


def test_scripted_expert_gives_the_hand_computed_values(expert_records, backend):
    bumps, wrong = expert_records
    assert task_shortest(bumps) == 10 and bumps.n_turns == 12 and bumps.truncated
    assert sum(bumps.rewards) == 0 and wrong.n_turns == 2 and wrong.rewards == [0.0, 0.0]
    result = expert_values(expert_records, backend.tokenizer)
    # the expert needs 10 turns from the start: it succeeds with 12, 11 or 10 turns left
    # (states 0-2); after the third wasted turn 9 remain: it surely fails from there on
    assert result.state_values[0] == [1.0, 1.0, 1.0] + [0.0] * 9
    assert result.turn_values[0] == [0.0, 0.0, -1.0] + [0.0] * 9  # the third bump lost it
    assert result.state_values[1] == [1.0, 1.0]  # 9 turns needed after north, 11 left
    assert result.turn_values[1] == [0.0, -1.0]  # the wrong answer lost it
    assert result.states_done == result.states_total == 14 and not result.stopped_early
    assert result.turns_valued == 14 and not result.failed and not result.skipped
    assert attach(expert_records, result) == 14
    assert [m[MC_KEY] for m in wrong.turn_metrics] == [0.0, -1.0]


def test_budget_stops_in_order_and_leaves_later_turns_without_values(expert_records, backend):
    ticks = itertools.count()  # one second per look at the clock: cut after two states
    result = expert_values(expert_records, backend.tokenizer, budget_s=4,
                           clock=lambda: next(ticks))
    assert result.stopped_early and result.states_done == 2
    assert result.state_values[0] == [1.0, 1.0] + [None] * 10
    assert result.turn_values[0] == [0.0] + [None] * 11  # turn 1 needs V(s_2)
    assert result.state_values[1] == [None, None] and result.turns_valued == 1
    assert turn_values([0.5, None, 0.25], [0.0, 0.0, 1.0]) == [None, None, 0.75]


def test_tiny_policy_values_depend_only_on_stable_keys(policy_dir, backend):
    renderer = ChatRenderer(backend.tokenizer)
    tasks = KeyDoorEnv(**RANDOM_KWARGS).tasks
    trajs = record(backend, renderer, RANDOM_KWARGS, tasks, group_size=2, max_new_tokens=4)
    settings = MCSettings(k=4, max_new_tokens=4, seed=3)
    full = estimate_mc_values(trajs, backend, renderer, settings=settings)
    assert full.turns_valued == sum(t.n_turns for t in trajs) > len(trajs)
    values = [v for vs in full.state_values for v in vs]
    assert all(0.0 <= v <= 1.0 for v in values) and len(set(values)) > 1
    # the last trajectory alone, or everything once more: the same values
    alone = estimate_mc_values(trajs[-1:], backend, renderer, settings=settings)
    assert alone.state_values == full.state_values[-1:]
    assert estimate_mc_values(trajs, backend, renderer, settings=settings).turn_values \
        == full.turn_values


def test_records_of_another_tokenizer_are_refused(expert_records, backend):
    other = expert_records[1]
    other = type(other).from_dict({**other.to_dict(), "prompt_ids": other.prompt_ids[1:]})
    with pytest.raises(ConfigError, match="tokenizer of the policy that wrote the records"):
        expert_values([other], backend.tokenizer)


def test_a_replay_that_diverges_leaves_its_states_without_values(expert_records, backend):
    wrong = expert_records[1]
    edited = type(wrong).from_dict({**wrong.to_dict(), "rewards": [0.5, 0.0]})
    result = expert_values([edited], backend.tokenizer)
    assert result.state_values == [[1.0, None]]  # s_0 needs no replay; s_1 replays turn 0
    assert result.turn_values == [[None, None]] and result.states_done == 2
    ((tid, turn, error),) = result.failed
    assert (tid, turn) == (wrong.id, 1) and "turn 0 differs from the record" in error


def test_cli_writes_spearman_mc(policy_dir, backend, tmp_path, capsys):
    from creditgym.replay.io import TrajectoryWriter, run_metadata

    tasks = KeyDoorEnv(**RANDOM_KWARGS).tasks
    trajs = record(backend, ChatRenderer(backend.tokenizer), RANDOM_KWARGS, tasks,
                   group_size=4, seed=1, max_new_tokens=4)
    path, out = tmp_path / "rollouts.jsonl", tmp_path / "bench.json"
    with TrajectoryWriter(path, run_metadata(env_id=ENV_ID)) as w:
        w.write_many(trajs)
    assert main(["credit-bench", str(path), "--estimators", "grpo,gigpo", "--json", str(out),
                 "--mc-model", str(policy_dir), "--mc-k", "4"]) == 0
    turns = sum(t.n_turns for t in trajs)
    assert f"MC values: {turns} of {turns} turns" in capsys.readouterr().out
    rows = {r["estimator"]: r for r in json.loads(out.read_text())}
    assert all(isinstance(rows[n]["spearman_mc"], float) for n in ("grpo", "gigpo"))
    assert main(["credit-bench", str(path), "--mc-k", "4"]) == 2
    assert "need --mc-model" in capsys.readouterr().err
