"""Data parallelism on CPU (gloo): 2 FSDP2 ranks give the single-process update, and the helpers.

The 2-rank run happens once per module (``two_ranks``): the ranks are forked from this process,
each trains on its share of the groups of ``dist_cases.groups()``, and rank 0 saves the full
parameters of every case, compared here with the same case run in this process.
"""

from __future__ import annotations

import pytest
import torch

from creditgym.trainers.distributed import (
    DistributedError,
    all_reduce_max,
    all_reduce_sum,
    even_micro_batches,
    init_distributed,
    is_main,
    raise_together,
    split_groups,
    world,
)
from creditgym.trainers.logprobs import TrainerInputError, pack_trajectories
from tests.trainers import dist_cases
from tests.trainers.helpers import PAD, make_trajs

TOL = 1e-5


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "ranks.pt"
    dist_cases.launch(str(out), nprocs=2)
    return torch.load(out)


@pytest.mark.parametrize("case", list(dist_cases.CASES))
def test_two_fsdp_ranks_equal_one_process(two_ranks, case):
    got = two_ranks[case]
    want = dist_cases.run_case(case, distributed=False)
    # rank 0 trained on 3 of the 5 groups (7 of 13 trajectories): a real split
    assert got["shares"] == [2, 4, 1]
    lora = dist_cases.CASES[case].get("lora", False)
    start = dict((dist_cases.lora_model() if lora else dist_cases.tiny_model(0)).named_parameters())
    assert got["params"].keys() == want["params"].keys()
    diff = max(float((got["params"][k] - want["params"][k]).abs().max()) for k in want["params"])
    moved = max(float((want["params"][k] - start[k].detach()).abs().max())
                for k in want["params"])
    assert diff <= TOL, f"{case}: 2 ranks differ from 1 by {diff:.2e}"
    assert moved > 100 * TOL  # the step is large enough for an error to show
    if lora:  # only the adapters train, on every rank
        frozen = [k for k in want["params"] if "lora_" not in k]
        assert len(frozen) > 10  # embeddings, norms, the 14 wrapped linears
        for k in frozen:
            assert torch.equal(got["params"][k], start[k].detach()), k
            assert torch.equal(want["params"][k], start[k].detach()), k
    for key in ("loss", "grad_norm", "tokens", "entropy", "clip_frac", "kl_ref", "dpo_loss",
                "pairs", "q_mean"):
        if key in want["metrics"]:
            assert got["metrics"][key] == pytest.approx(want["metrics"][key], rel=1e-5,
                                                        abs=1e-7), key
    if "max_grad_norm" in dist_cases.CASES[case] and dist_cases.CASES[case]["max_grad_norm"]:
        assert want["metrics"]["grad_norm"] > 10 * dist_cases.CASES[case]["max_grad_norm"]


def test_a_bad_share_on_one_rank_fails_every_rank_at_once(two_ranks):
    # rank 0's message (rank 1 had no trajectories and raised TrainerInputError itself)
    assert two_ranks["errors"].startswith("DistributedError: rank(s) [1] failed")


def test_a_dead_rank_ends_the_others_with_a_clear_error(tmp_path):
    with pytest.raises(Exception, match=r"DistributedError: rank 0/2: all-reduce failed .*"
                                        r"another rank has probably died"):
        dist_cases.launch(str(tmp_path / "unused"), dead_peer=True)


def test_split_groups_keeps_groups_whole_and_balances_them():
    groups = [["a"] * n for n in (3, 2, 4, 1, 3, 5)]
    shares = [split_groups(groups, rank=r, world=3) for r in range(3)]
    # every group on exactly one rank, each share in the original order
    flat = [id(g) for s in shares for g in s]
    assert sorted(flat) == sorted(id(g) for g in groups)
    for s in shares:
        pos = [next(i for i, g in enumerate(groups) if g is x) for x in s]
        assert pos == sorted(pos)
    assert [sum(map(len, s)) for s in shares] == [6, 6, 6]
    # deterministic, a custom weight, more ranks than groups, a world of one
    assert shares == [split_groups(groups, rank=r, world=3) for r in range(3)]
    assert split_groups(groups, rank=0, world=2, weight=lambda g: 1) == [groups[i]
                                                                      for i in (0, 2, 4)]
    assert split_groups(groups[:1], rank=1, world=2) == []
    assert split_groups(groups) == groups
    with pytest.raises(DistributedError, match="rank 2 is outside a world of 2"):
        split_groups(groups, rank=2, world=2)


def test_helpers_are_the_identity_in_a_world_of_one(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed()
    assert (info.rank, info.world, info.backend) == (0, 1, None)
    assert world() == 1 and is_main()
    t = torch.ones(3)
    assert all_reduce_sum(t) is t and all_reduce_max(5) == 5
    micros = pack_trajectories(make_trajs(3), PAD).micro_batches(16)
    assert even_micro_batches(micros) is micros
    raise_together(None)
    with pytest.raises(TrainerInputError, match="boom"):
        raise_together(TrainerInputError("boom"))


def test_sharded_weights_stream_one_by_one_as_the_plain_model(two_ranks):
    """Every rank gathers one weight at a time (LoRA merged): the plain model's state dict."""
    from creditgym.trainers.lora import plain_state_dict

    for got, want in ((two_ranks["plain_weights"], plain_state_dict(dist_cases.lora_model())),
                      (two_ranks["plain_weights_full"], dist_cases.tiny_model(0).state_dict())):
        assert list(got) == list(want)
        assert max(float((got[k] - want[k]).abs().max()) for k in want) <= 1e-6
    assert "model.layers.0.self_attn.q_proj.weight" in two_ranks["plain_weights"]
