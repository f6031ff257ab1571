"""``rollout_one`` on a scripted, deterministic environment (``tests/agents/countdown_env.py``),
with the session's real tiny model as the policy: what a record holds (the seeded reset, the
system prompt, tool schemas, anchors, rewards, finish reasons), the exact context-budget
boundaries, what a continuation copies from the record it starts from, errors, batching and
admission. ``replay_prefix`` alone: ``test_replay_prefix.py``."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from creditgym.agents.backend import SamplingParams
from creditgym.agents.chat import ChatRenderer
from creditgym.agents.generation_batcher import GenerationBatcher
from creditgym.agents.hf_backend import TransformersBackend
from creditgym.agents.rollout import RolloutConfig, _Admission, rollout, rollout_one, stream_seed
from creditgym.errors import ConfigError
from creditgym.trajectory import Trajectory
from tests.agents.countdown_env import TASK, TOOLS, CountdownEnv

MAX_NEW = 8


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    b = TransformersBackend(tiny_model_dir, seed=0)
    yield b
    b.close()


def config(**kw):
    sampling = SamplingParams(max_new_tokens=MAX_NEW, temperature=1.0, seed=5)
    return RolloutConfig(**{"group_size": 1, "sampling": sampling, **kw})


def run_one(backend, env, cfg, *, renderer=None, seed=3, **kw):
    renderer = renderer or ChatRenderer(backend.tokenizer, observation_role=cfg.observation_role)

    async def go():
        batcher = GenerationBatcher(backend, max_batch=1, mode="alone")
        return await rollout_one(env, TASK, seed=seed, group="g", traj_id="g/0", batcher=batcher,
                                 renderer=renderer, config=cfg, sample_key=(0, 0), **kw)

    return asyncio.run(go())


def running_before(t, turn):
    ids = list(t.prompt_ids)
    for a, o in zip(t.action_ids[:turn], t.observation_ids[:turn]):
        ids += a + o
    return ids


def expected_mismatches(t, renderer, tools=None):
    """What ``check_prefix`` must record, derived from the record alone: after each turn that
    did not end the episode, the first position where the running ids leave a fresh render."""
    messages, found = list(t.prompt_messages), []
    for turn in range(t.n_turns - 1):
        messages += [{"role": "assistant", "content": t.actions[turn]},
                     {"role": renderer.observation_role, "content": t.observations[turn]}]
        m = renderer.first_mismatch(running_before(t, turn + 1), messages, tools=tools)
        if m is not None:
            found.append(m.position)
    return found


def test_a_record_holds_the_seeded_reset_and_what_each_turn_returned(backend):
    renderer = ChatRenderer(backend.tokenizer)
    t = run_one(backend, CountdownEnv(), config())
    assert t.error is None and (t.terminated, t.truncated) == (True, False)
    obs, _ = CountdownEnv().reset(seed=3, options={"task": TASK})  # the record's reset seed
    assert t.prompt_messages == [{"role": "system", "content": "Answer in one word."},
                                 {"role": "user", "content": obs}]
    assert t.prompt_ids == renderer.prompt_ids(t.prompt_messages)
    assert (t.seed, t.env_id, t.env_kwargs) == (3, "", {})
    assert t.rewards == [0.25, 0.5, 0.75] and t.anchors == ["state 0", "state 1", "state 2"]
    assert t.metrics == {"turn": 3}  # the last turn's metrics are the outcome's
    for turn in range(3):
        # every turn is what the policy draws from the running ids with the turn's own seed
        sampling = SamplingParams(max_new_tokens=MAX_NEW, temperature=1.0)
        want = backend.generate([running_before(t, turn)], sampling,
                                seeds=[stream_seed(5, 0, 0, turn)])[0]
        assert t.action_ids[turn] == want.token_ids
        assert t.action_logprobs[turn] == pytest.approx(want.logprobs, abs=1e-5)
        assert t.finish_reasons[turn] == want.finish_reason
        assert t.actions[turn] == renderer.assistant_text(want.token_ids)
        wrote = len(t.actions[turn])
        assert t.observations[turn] == f"turn {turn + 1}: you wrote {wrote} characters"
        ended = turn == 2  # the final observation is not appended: nothing reads it
        assert t.observation_ids[turn] == ([] if ended else renderer.observation_ids(
            t.observations[turn], t.action_ids[turn]))
    # another sampling seed draws another episode
    other = run_one(backend, CountdownEnv(), config(sampling=SamplingParams(
        max_new_tokens=MAX_NEW, temperature=1.0, seed=6)))
    assert other.action_ids != t.action_ids


def test_an_action_that_ended_its_turn_is_not_closed_twice(backend):
    """When the policy itself generated the end-of-turn token, the observation ids carry only
    what follows it (a second end token would put the policy off the template)."""
    renderer = ChatRenderer(backend.tokenizer)
    for seed in range(16):  # draws until an action (not the last) ends its own turn
        t = run_one(backend, CountdownEnv(), config(sampling=SamplingParams(
            max_new_tokens=MAX_NEW, temperature=1.0, seed=seed)))
        ended = [k for k in range(2) if t.action_ids[k][-1] in renderer.end_of_turn_ids]
        if ended:
            break
    assert ended, "no sampled action ended its turn: this test proves nothing"
    k = ended[0]
    assert t.observation_ids[k] == renderer.observation_ids(t.observations[k], t.action_ids[k])
    closing = renderer.observation_ids(t.observations[k], [])  # as after a cut-off action
    assert len(t.observation_ids[k]) < len(closing) and closing[0] == t.action_ids[k][-1]


def test_without_anchors_each_turn_is_anchored_at_the_observation_before_it(backend):
    t = run_one(backend, CountdownEnv(anchors=False), config())
    assert t.anchors == [t.prompt_messages[-1]["content"], *t.observations[:2]]


@pytest.mark.parametrize("wanted,offered", [(True, False), (False, True), (True, True)])
def test_the_system_prompt_is_sent_only_when_the_config_wants_and_the_env_has_one(
        backend, wanted, offered):
    t = run_one(backend, CountdownEnv(system_prompt=offered), config(system_prompt=wanted))
    assert t.error is None
    roles = [m["role"] for m in t.prompt_messages]
    assert roles == (["system", "user"] if wanted and offered else ["user"])


@pytest.mark.parametrize("in_template", [True, False])
def test_tool_schemas_reach_the_prompt_and_the_prefix_check_only_when_asked(backend, in_template):
    renderer = ChatRenderer(backend.tokenizer)
    t = run_one(backend, CountdownEnv(tools=True), config(tools_in_template=in_template,
                                                          check_prefix=True))
    assert t.error is None
    tools = TOOLS if in_template else None
    assert t.prompt_ids == renderer.prompt_ids(t.prompt_messages, tools=tools)
    assert ('"name": "lookup"' in renderer.decode(t.prompt_ids)) == in_template
    recorded = t.metrics.get("rollout/prefix_mismatch_at", [])
    assert recorded == expected_mismatches(t, renderer, tools)


def test_the_prefix_check_records_where_a_fresh_render_leaves_the_running_ids(backend):
    """A sampled action need not be the tokenizer's own encoding of its text; the check finds
    where. Over these seeds some episode has such a turn, or the metric is never exercised."""
    renderer, seen = ChatRenderer(backend.tokenizer), 0
    for seed in range(4):
        cfg = config(check_prefix=True, sampling=SamplingParams(
            max_new_tokens=24, temperature=1.0, seed=seed))
        t = run_one(backend, CountdownEnv(), cfg)
        want = expected_mismatches(t, renderer)
        assert t.metrics.get("rollout/prefix_mismatch_at", []) == want
        seen += bool(want)
    assert seen > 0


def test_context_budget_boundaries(backend):
    """The prompt exactly filling the context ends the episode before any turn; one token left
    gives a one-token turn; an observation that would exactly fill the context is dropped (no
    turn could follow it), one token more and it is kept."""
    full = run_one(backend, CountdownEnv(), config())
    p, a0, o0 = len(full.prompt_ids), len(full.action_ids[0]), len(full.observation_ids[0])

    none = run_one(backend, CountdownEnv(), config(max_context_tokens=p))
    assert none is not None and none.error is None and none.n_turns == 0
    assert none.terminated is False and none.truncated is True

    one = run_one(backend, CountdownEnv(), config(max_context_tokens=p + 1))
    assert one.error is None and [len(a) for a in one.action_ids] == [1]
    assert one.observation_ids == [[]] and one.truncated and not one.terminated

    exact = run_one(backend, CountdownEnv(), config(max_context_tokens=p + a0 + o0))
    assert exact.action_ids == full.action_ids[:1] and exact.observation_ids == [[]]
    assert exact.truncated and not exact.terminated and len(exact.tokens()) == p + a0

    more = run_one(backend, CountdownEnv(), config(max_context_tokens=p + a0 + o0 + 1))
    assert more.observation_ids[0] == full.observation_ids[0]
    assert [len(a) for a in more.action_ids] == [a0, 1] and more.truncated
    assert len(more.tokens()) == p + a0 + o0 + 1


@pytest.mark.parametrize("start", [0, 1, 2])
def test_a_continuation_copies_the_record_then_draws_what_the_record_drew(backend, start):
    """With the record's seed and sample key, a continuation from any turn is the record
    itself: copied turns as recorded (ids, log-probs, finish reasons, anchors, the chat so far,
    which the prefix check re-renders), then the same draws."""
    cfg = config(observation_role="tool", check_prefix=True, sampling=SamplingParams(
        max_new_tokens=4, temperature=1.0, seed=2))  # short: some turns end at the length cap
    record = run_one(backend, CountdownEnv(), cfg)
    assert "length" in record.finish_reasons[:2] and record.anchors[1] == "state 1"
    again = run_one(backend, CountdownEnv(), cfg, prefix=record, prefix_turns=start)
    drop = {"created"}
    assert ({k: v for k, v in again.to_dict().items() if k not in drop}
            == {k: v for k, v in record.to_dict().items() if k not in drop})


def test_a_continuation_starts_at_the_first_turn_unless_told_otherwise(backend):
    record = run_one(backend, CountdownEnv(), config())
    other_draws = config(sampling=SamplingParams(max_new_tokens=MAX_NEW, temperature=1.0,
                                                 seed=9))
    again = run_one(backend, CountdownEnv(), other_draws, prefix=record)
    fresh = run_one(backend, CountdownEnv(), other_draws)
    assert again.action_ids == fresh.action_ids != record.action_ids


def test_an_environment_that_fails_on_reset_errors_its_record_with_the_exception(backend):
    class BrokenReset(CountdownEnv):
        def reset(self, *, seed=None, options=None):
            raise OSError("index missing")

    t = run_one(backend, BrokenReset(), config())
    assert t.error == "OSError: index missing" and t.prompt_ids == [] and t.n_turns == 0
    assert Trajectory.from_dict(t.to_dict()).error == t.error  # still a writable record


class CallLog(TransformersBackend):
    """The real backend, noting how many prompts each call carried and failing on request."""

    def __init__(self, *args, fail=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.sizes, self.fail = [], fail

    def generate(self, prompts, sampling, seeds=None):
        self.sizes.append(len(prompts))
        out = super().generate(prompts, sampling, seeds=seeds)
        if self.fail:
            out = [dataclasses.replace(c, finish_reason="error", error="CUDA out of memory")
                   for c in out]
        return out


def test_a_backend_error_ends_the_trajectory_with_its_message(tiny_model_dir):
    b = CallLog(tiny_model_dir, seed=0, fail=True)
    try:
        t = run_one(b, CountdownEnv(), config())
    finally:
        b.close()
    assert t.error == "RuntimeError: backend error: CUDA out of memory" and t.n_turns == 0


@pytest.mark.parametrize("mode,max_batch,largest", [("free", 2, 2), ("alone", 64, 1)])
def test_rollout_batches_at_most_max_generation_batch_in_its_batching_mode(
        tiny_model_dir, mode, max_batch, largest):
    b = CallLog(tiny_model_dir, seed=0)
    try:
        trajs = rollout(CountdownEnv, [TASK], b, ChatRenderer(b.tokenizer),
                        config(group_size=4, batching=mode, max_generation_batch=max_batch))
    finally:
        b.close()
    assert all(t.error is None for t in trajs) and max(b.sizes) == largest


def test_one_at_a_time_reuses_one_environment(backend):
    made = []

    def make_env():
        made.append(CountdownEnv())
        return made[-1]

    trajs = rollout(make_env, [TASK], backend, ChatRenderer(backend.tokenizer),
                    config(group_size=3, max_concurrency=1))
    assert [t.error for t in trajs] == [None] * 3 and len(made) == 1
    assert [t.env_id for t in trajs] == [""] * 3
    with pytest.raises(ConfigError, match=r"RolloutConfig.max_concurrency=0: must be >= 1"):
        rollout(make_env, [TASK], backend, ChatRenderer(backend.tokenizer),
                config(max_concurrency=0))


def test_a_trajectory_cancelled_before_admission_gives_its_place_to_the_next(backend):
    async def go():
        keys = [(0, 0), (0, 1), (0, 2)]
        admission = _Admission(keys, 1, GenerationBatcher(backend))
        admission.exit((0, 1))  # cancelled while waiting: it never ran
        admission.exit((0, 0))
        await asyncio.wait_for(admission.enter((0, 2)), 1)  # admitted, not (0, 1)

    asyncio.run(go())
