"""pack_trajectories layout, micro-batch splitting, and sequence_logprobs on a real tiny Llama."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from creditgym.trainers.logprobs import TrainerInputError, pack_trajectories, sequence_logprobs
from creditgym.trajectory import Trajectory
from tests.trainers.helpers import PAD, make_trajs, tiny_model


def test_pack_layout_matches_trajectories():
    trajs = make_trajs(5, seed=1)
    b = pack_trajectories(trajs, PAD, require_advantages=True)
    width = max(len(t.tokens()) for t in trajs)
    assert b.input_ids.shape == (5, width)
    for i, t in enumerate(trajs):
        L = len(t.tokens())
        assert b.lengths[i] == L
        assert b.input_ids[i, :L].tolist() == t.tokens().tolist()
        assert (b.input_ids[i, L:] == PAD).all() and (b.attention_mask[i, L:] == 0).all()
        assert (b.attention_mask[i, :L] == 1).all()
        assert b.loss_mask[i, :L].tolist() == t.loss_mask().tolist()
        assert (b.loss_mask[i, L:] == 0).all()
        act = b.loss_mask[i].bool()
        flat_lp = [x for lp in t.action_logprobs for x in lp]
        assert b.old_logprobs[i][act].tolist() == pytest.approx(flat_lp)
        assert (b.old_logprobs[i][~act] == 0).all()
        assert b.advantages[i, :L].tolist() == pytest.approx(t.advantages)
        assert b.turn_of_token[i, :L].tolist() == t.turn_of_token().tolist()
        assert (b.turn_of_token[i, L:] == -1).all()
        assert b.n_turns[i] == t.n_turns
    assert b.num_tokens == sum(int(t.loss_mask().sum()) for t in trajs)


def test_pack_rejects_unusable_trajectories():
    t = make_trajs(1, with_advantages=False)[0]
    pack_trajectories([t], PAD)  # advantages optional by default (SFT)
    with pytest.raises(TrainerInputError, match="no advantages"):
        pack_trajectories([t], PAD, require_advantages=True)
    t.advantages = [0.0] * 3
    with pytest.raises(TrainerInputError, match="per token"):
        pack_trajectories([t], PAD)
    empty_prompt = Trajectory(id="x", group="g", task={}, prompt_ids=[], action_ids=[[3, 4]],
                              action_logprobs=[[-1.0, -1.0]], observation_ids=[[]], rewards=[0.0],
                              anchors=[None], valid=[True])
    with pytest.raises(TrainerInputError, match="empty prompt"):
        pack_trajectories([empty_prompt], PAD)
    with pytest.raises(TrainerInputError):
        pack_trajectories([], PAD)


def test_micro_batches_respect_budget_and_cover_rows():
    b = pack_trajectories(make_trajs(9, seed=2), PAD)
    budget = 24
    micros = b.micro_batches(budget)
    assert len(micros) > 1
    seen = []
    for m in micros:
        assert m.input_ids.numel() <= budget or m.num_seqs == 1
        assert m.input_ids.shape[1] == int(m.lengths.max())  # padding trimmed
        for r, i in enumerate(m.index.tolist()):
            L = int(b.lengths[i])
            assert torch.equal(m.input_ids[r, :L], b.input_ids[i, :L])
            assert torch.equal(m.loss_mask[r, :L], b.loss_mask[i, :L])
            assert torch.equal(m.advantages[r, :L], b.advantages[i, :L])
        seen += m.index.tolist()
    assert sorted(seen) == list(range(9))
    assert sum(m.num_tokens for m in micros) == b.num_tokens
    assert b.micro_batches(None) == [b]
    big = b.micro_batches(1)  # smaller than any row: one row per micro-batch
    assert len(big) == 9


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
def test_sequence_logprobs_match_unpadded_log_softmax(temperature):
    model = tiny_model().eval()
    trajs = make_trajs(4, seed=3)
    b = pack_trajectories(trajs, PAD)
    with torch.no_grad():
        lp, ent = sequence_logprobs(model, b.input_ids, b.attention_mask,
                                    temperature=temperature, return_entropy=True)
    assert lp.shape == b.input_ids.shape and (lp[:, 0] == 0).all()
    for i, t in enumerate(trajs):
        ids = torch.as_tensor(t.tokens())[None]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float() / temperature
        dist = torch.log_softmax(logits, dim=-1)
        want = dist[:-1].gather(-1, ids[0, 1:, None]).squeeze(-1)
        L = ids.shape[1]
        assert torch.allclose(lp[i, 1:L], want, atol=1e-5)
        want_ent = torch.distributions.Categorical(logits=logits[:-1]).entropy()
        assert torch.allclose(ent[i, 1:L], want_ent, atol=1e-5)
    with pytest.raises(TrainerInputError, match="temperature"):
        sequence_logprobs(model, b.input_ids, b.attention_mask, temperature=0.0)


def test_sequence_logprobs_are_differentiable():
    model = tiny_model()
    b = pack_trajectories(make_trajs(2, seed=4), PAD)
    lp = sequence_logprobs(model, b.input_ids, b.attention_mask)
    (lp * b.loss_mask).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert np.isfinite([float(g.abs().sum()) for g in grads]).all()


# --- mutation-testing round 3 (docs/mutation-report.md, "Third run") ---


def _traj_of_length(i: int, length: int) -> Trajectory:
    """A trajectory of ``length`` tokens: ``length - 1`` prompt tokens and one generated token."""
    return Trajectory(id=f"L{i}", group="g", task={}, prompt_ids=[1] * (length - 1),
                      action_ids=[[2]], action_logprobs=[[-1.0]], observation_ids=[[]],
                      rewards=[0.0], anchors=[None], valid=[True])


def test_pack_dtypes_follow_the_batch_contract():
    b = pack_trajectories(make_trajs(3, seed=1), PAD)
    assert b.input_ids.dtype == torch.int64 and b.attention_mask.dtype == torch.int64
    assert b.turn_of_token.dtype == torch.int64
    assert b.loss_mask.dtype == torch.float32 and b.old_logprobs.dtype == torch.float32
    assert b.advantages.dtype == torch.float32


def test_pack_error_messages_and_short_trajectories():
    with pytest.raises(TrainerInputError, match="^no trajectories given; a training step needs"):
        pack_trajectories([], PAD)
    empty = Trajectory(id="e", group="g", task={}, prompt_ids=[])
    with pytest.raises(TrainerInputError, match="^trajectory 'e' has no tokens$"):
        pack_trajectories([empty], PAD)
    # a prompt of one token and no turns (an episode that ended at once) packs as one row
    b = pack_trajectories([Trajectory(id="p", group="g", task={}, prompt_ids=[5])], PAD)
    assert b.input_ids.tolist() == [[5]] and b.loss_mask.tolist() == [[0.0]]
    assert b.turn_of_token.tolist() == [[-1]] and b.num_tokens == 0
    # an empty prompt is caught from the first token even when the second is an observation
    first_generated = Trajectory(id="x", group="g", task={}, prompt_ids=[], action_ids=[[3]],
                                 action_logprobs=[[-1.0]], observation_ids=[[7]], rewards=[0.0],
                                 anchors=[None], valid=[True])
    with pytest.raises(TrainerInputError, match="empty prompt"):
        pack_trajectories([first_generated], PAD)


def test_micro_batches_take_rows_longest_first_up_to_the_budget():
    # lengths 2, 6, 3, 5; budget 10. Longest first: row 1 (6) alone (2 x 6 = 12 > 10);
    # row 3 (5) then row 2 (3): 2 x 5 = 10 <= 10 fits; row 0: 3 x 5 = 15 > 10, alone.
    b = pack_trajectories([_traj_of_length(i, n) for i, n in enumerate([2, 6, 3, 5])], PAD)
    micros = b.micro_batches(10)
    assert [m.index.tolist() for m in micros] == [[1], [3, 2], [0]]
    assert [tuple(m.input_ids.shape) for m in micros] == [(1, 6), (2, 5), (1, 2)]
    with pytest.raises(TrainerInputError, match="^micro_batch_tokens must be positive, got 0$"):
        b.micro_batches(0)


def test_select_of_no_rows_is_an_empty_batch():
    b = pack_trajectories(make_trajs(3, seed=1), PAD)
    e = b.select([])
    assert e.num_seqs == 0 and tuple(e.input_ids.shape) == (0, 0)
    assert tuple(e.lengths.shape) == (0,)


def test_batch_to_moves_every_tensor():
    b = pack_trajectories(make_trajs(2, seed=1), PAD).to("meta")
    for name, value in vars(b).items():
        assert value.device.type == "meta", name


def test_sequence_logprobs_honour_the_attention_mask():
    # position 1 masked out: changing its token changes no log-prob from position 3 on (those
    # are predicted from positions >= 2, which cannot see it); with the mask all ones it does
    model = tiny_model().eval()
    ids = torch.tensor([[5, 9, 11, 13, 17, 19, 23, 29]])
    other = ids.clone()
    other[0, 1] = 40
    hole = torch.ones_like(ids)
    hole[0, 1] = 0
    with torch.no_grad():
        a, b = (sequence_logprobs(model, x, hole) for x in (ids, other))
        a1, b1 = (sequence_logprobs(model, x, torch.ones_like(ids)) for x in (ids, other))
    assert torch.allclose(a[:, 3:], b[:, 3:], atol=1e-6)
    assert not torch.allclose(a1[:, 3:], b1[:, 3:], atol=1e-4)


def test_autocast_is_a_no_op_for_a_model_on_the_cpu():
    import contextlib

    from creditgym.trainers.logprobs import autocast_context

    model = tiny_model()
    for bf16 in (True, False):
        assert isinstance(autocast_context(model, bf16), contextlib.nullcontext)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_autocast_runs_a_cuda_model_in_bf16_when_asked():
    from creditgym.trainers.logprobs import autocast_context

    model = tiny_model().cuda()
    x = torch.ones(1, 32, device="cuda")
    with autocast_context(model, True):
        assert torch.is_autocast_enabled("cuda")
        assert torch.get_autocast_dtype("cuda") == torch.bfloat16
        assert model.lm_head(x).dtype == torch.bfloat16
    with autocast_context(model, False):
        assert model.lm_head(x).dtype == torch.float32
