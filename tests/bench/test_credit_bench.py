"""The credit bench: its metrics on hand-made batches with known values, every registered
estimator benchmarked (GRPO and RLOO at exactly 0.5), and ``creditgym credit-bench`` end to end
on a file of real built-in-world episodes (bm25s index)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from creditgym.bench.credit_bench import (
    BenchRow,
    auc,
    bench_credit,
    outcome_side,
    pairwise_accuracy,
    spearman,
    wrong_sign,
)
from creditgym.cli import main
from creditgym.credit.adapter import turns_to_tokens
from creditgym.credit.registry import ESTIMATORS, register_estimator, unregister_estimator
from creditgym.envs.world.expert import expert_action
from tests.credit.helpers import make_traj
from tests.replay.helpers import POLICIES, SEARCH_KWARGS, build_tokenizer, record_episode

FIELDS = ["estimator", "pairwise_accuracy", "auc", "spearman_mc", "wrong_sign",
          "ms_per_1k_turns", "turns", "skipped", "pairwise_winners", "pairwise_losers"]


# ------------------------------------------------------------------------- metrics by hand


def test_metrics_known_values():
    # trajectory 0: useful 1.0, wasted 1.0 (tie: 0.5), harmful 0.0 (both right: 1 + 1);
    # trajectory 1 has one labelled turn: no pair. 2.5 / 3
    assert pairwise_accuracy([0, 0, 0, 1, 1], [2, 1, 0, 2, -1], [1, 1, 0, 0, 5]) == 2.5 / 3
    assert pairwise_accuracy([0, 1], [2, 0], [1.0, 0.0]) is None  # no within-trajectory pair
    # useful {0.2, 0.0} vs not {0.2, 0.1}: 0.5 (tie) + 1 + 0 + 0 over 4 pairs
    assert auc([True, False, False, True], [0.2, 0.2, 0.1, 0.0]) == 0.375
    assert auc([True, True], [1.0, 2.0]) is None
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert wrong_sign([True, True, False, True], [-0.1, 0.0, -5.0, 0.3]) == pytest.approx(1 / 3)
    assert wrong_sign([False], [1.0]) is None


def test_pairwise_and_auc_agree_with_a_naive_count():
    rng = np.random.default_rng(0)
    traj = np.repeat(np.arange(60), rng.integers(1, 9, size=60))
    rank = rng.integers(-1, 3, size=traj.size)
    adv = rng.integers(-2, 3, size=traj.size).astype(float)  # many ties
    pairs = score = 0.0
    for i in range(traj.size):
        for j in range(traj.size):
            if traj[i] == traj[j] and rank[j] >= 0 and rank[i] > rank[j]:
                pairs += 1
                score += 1.0 if adv[i] > adv[j] else 0.5 if adv[i] == adv[j] else 0.0
    assert pairwise_accuracy(traj, rank, adv) == pytest.approx(score / pairs)
    pos = rank == 2
    wins = [(a > b) + 0.5 * (a == b) for a in adv[pos] for b in adv[~pos]]
    assert auc(pos, adv) == pytest.approx(np.mean(wins))


def test_outcome_side_splits_each_group_at_its_own_mean():
    groups = [[make_traj("a", "g", [0, 1]), make_traj("b", "g", [0.0]),
               make_traj("c", "g", [0.5, 0.0, 0.0])],  # returns 1, 0, 0.5: mean 0.5
              [make_traj("d", "h", [0.1, 0.2]), make_traj("e", "h", [0.3])]]  # 0.1+0.2 == 0.3
    assert outcome_side(groups).tolist() == [1, 1, -1, 0, 0, 0, 0, 0, 0]


# ------------------------------------------------------------------- the bench, hand-made


def worked_pair():
    """CREDIT.md's GiGPO example: A (anchors q, d1; rewards 0, 1), B (q, d2; 0, 0); with
    norm=mean, gamma=1 the totals are A [1.0, 0.5], B [-1.0, -0.5]."""
    return [[make_traj("A", "g", [0, 1], anchors=["q", "d1"]),
             make_traj("B", "g", [0, 0], anchors=["q", "d2"])]]


LABELS = [["wasted", "useful"], ["useful", "harmful"]]


def test_known_values_on_the_worked_example():
    rows = {r.estimator: r for r in bench_credit(
        worked_pair(), LABELS, options={"gigpo": {"norm": "mean", "gamma": 1.0}})}
    assert list(rows) == list(ESTIMATORS)  # every registered estimator, in registry order
    g = rows["gigpo"]
    # A: useful 0.5 < wasted 1.0; B: useful -1.0 < harmful -0.5: both pairs wrong
    assert g.pairwise_accuracy == 0.0
    assert (g.pairwise_winners, g.pairwise_losers) == (0.0, 0.0)  # A won, B lost
    # useful {0.5, -1.0} vs not {1.0, -0.5}: only 0.5 > -0.5 wins: 1 / 4
    assert g.auc == 0.25 and g.wrong_sign == 0.5 and g.turns == 4
    assert g.spearman_mc is None and g.ms_per_1k_turns > 0 and g.skipped is None
    for name in ("grpo", "rloo"):  # one value per trajectory: every pair a tie
        assert rows[name].pairwise_accuracy == 0.5
    # GRPO: A +0.707 on both turns, B -0.707: useful {+, -} vs not {+, -}: 0.5 + 1 + 0 + 0.5
    assert rows["grpo"].auc == 0.5 and rows["grpo"].wrong_sign == 0.5
    for name, need in (("igpo", "probe_logprob"), ("oprl", "logratio_sum")):
        assert rows[name].skipped.startswith(f"needs input {need!r}")
        assert rows[name].pairwise_accuracy is None and rows[name].turns == 0


def test_inputs_and_mc_values_carried_by_the_records():
    groups = worked_pair()
    totals = {"A": [1.0, 0.5], "B": [-1.0, -0.5]}
    for t in groups[0]:
        t.turn_metrics = [{"input/probe_logprob": -3.0 + k, "input/logratio_sum": 0.1 * k,
                           "mc/value": totals[t.id][k]} for k in range(2)]
    rows = {r.estimator: r for r in bench_credit(
        groups, LABELS, options={"gigpo": {"norm": "mean", "gamma": 1.0}})}
    assert rows["igpo"].skipped is None and rows["oprl"].skipped is None
    assert rows["igpo"].turns == 4
    assert rows["gigpo"].spearman_mc == pytest.approx(1.0)  # MC values = its own advantages
    # given inputs override the records'
    given = {"probe_logprob": {"A": [0.0, 0.0], "B": [0.0, 0.0]}}
    (row,) = bench_credit(groups, LABELS, estimators=["igpo"], inputs=given)
    assert row.skipped is None and row.pairwise_accuracy is not None


def test_a_newly_registered_estimator_is_benchmarked_without_changes():
    @dataclass
    class LastTurnConfig:
        bonus: float = 1.0

    @register_estimator("test_last_turn", LastTurnConfig)
    def last_turn(batch, config, inputs):  # credit only the last turn of each trajectory
        last = np.r_[batch.traj[1:] != batch.traj[:-1], True]
        return turns_to_tokens(batch, config.bonus * last), {}

    try:
        rows = {r.estimator: r for r in bench_credit(worked_pair(), LABELS)}
        # A: useful last turn (1) > wasted (0): right; B: useful (0) < harmful last (1): wrong
        assert rows["test_last_turn"].pairwise_accuracy == 0.5
        # ... which the split by outcome takes apart: right on the winner, wrong on the loser
        assert rows["test_last_turn"].pairwise_winners == 1.0
        assert rows["test_last_turn"].pairwise_losers == 0.0
        (row,) = bench_credit(worked_pair(), LABELS, estimators=["test_last_turn"],
                              options={"test_last_turn": {"bonus": -1.0}})
        assert row == BenchRow("test_last_turn", 0.5, row.auc, None, 0.5, row.ms_per_1k_turns, 4,
                               pairwise_winners=0.0, pairwise_losers=1.0)
    finally:
        unregister_estimator("test_last_turn")


# -------------------------------------------------------------------- the command, end to end


def early_answer(task, turn, obs):
    return expert_action(task, turn, obs, early_answer_prob=1.0)


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory):
    """Four tasks, each a group of four real episodes: expert, wrong answer, invalid action
    then expert, and the expert answering with the bridge entity."""
    from creditgym.envs.search_env import SearchEnv
    from creditgym.replay.io import TrajectoryWriter, run_metadata

    folder = tmp_path_factory.mktemp("bench")
    env = SearchEnv(**SEARCH_KWARGS)
    tok = build_tokenizer(env, folder / "tokenizer")
    policies = {**POLICIES, "early": early_answer}
    trajs = [record_episode(env, task, policy, tid=f"g{g}-{name}", group=f"g{g}",
                            tokenizer=tok, seed=g)
             for g, task in enumerate(env.tasks[:4]) for name, policy in policies.items()]
    env.close()
    path = folder / "rollouts.jsonl"
    with TrajectoryWriter(path, run_metadata(env_id="creditgym/Search-v0")) as w:
        w.write_many(trajs)
    return path


def read_rows(path):
    return json.loads(path.read_text())


def test_cli_end_to_end(bench_file, tmp_path, capsys):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    before = bench_file.read_bytes()
    assert main(["credit-bench", str(bench_file), "--json", str(out), "--png", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "16 trajectories in 4 groups" in printed and "gigpo" in printed
    rows = read_rows(out)
    assert [r["estimator"] for r in rows] == list(ESTIMATORS)
    assert all(list(r) == FIELDS for r in rows)
    by = {r["estimator"]: r for r in rows}
    assert by["grpo"]["pairwise_accuracy"] == 0.5 and by["rloo"]["pairwise_accuracy"] == 0.5
    assert by["igpo"]["skipped"] and by["oprl"]["skipped"]
    turns = by["grpo"]["turns"]
    assert turns > 16 and by["gigpo"]["turns"] == turns and by["tempo"]["turns"] == turns
    assert 0.0 <= by["gigpo"]["auc"] <= 1.0 and by["gigpo"]["spearman_mc"] is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert bench_file.read_bytes() == before
    # deterministic for a fixed input, apart from the timing
    again = tmp_path / "again.json"
    assert main(["credit-bench", str(bench_file), "--json", str(again)]) == 0
    strip = lambda rs: [{k: v for k, v in r.items() if k != "ms_per_1k_turns"} for r in rs]
    assert strip(read_rows(again)) == strip(rows)


def test_cli_estimators_and_options(bench_file, tmp_path, capsys):
    out = tmp_path / "b.json"
    args = ["credit-bench", str(bench_file), "--estimators", "gigpo,grpo", "--json", str(out)]
    assert main(args) == 0
    assert [r["estimator"] for r in read_rows(out)] == ["gigpo", "grpo"]
    first = read_rows(out)[0]
    assert main([*args, "--force", "--set-option", "gigpo.step_weight=0"]) == 0
    assert read_rows(out)[0]["pairwise_accuracy"] == 0.5  # step level off: GiGPO is GRPO
    assert first["pairwise_accuracy"] != 0.5
    capsys.readouterr()
    assert main(["credit-bench", str(bench_file), "--estimators", "grpo,nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown estimator 'nope'" in err and "gigpo" in err
    assert main(["credit-bench", str(bench_file), "--set-option", "gigpo.gama=1"]) == 2
    assert "gama" in capsys.readouterr().err
    assert main(["credit-bench", str(bench_file), "--estimators", "grpo",
                 "--set-option", "gigpo.gamma=1"]) == 2
    assert "not among the benchmarked" in capsys.readouterr().err


def test_cli_files_never_share_a_group(bench_file, tmp_path, capsys):
    copy = tmp_path / "eval-after.jsonl"  # another file reusing the same group ids
    copy.write_bytes(bench_file.read_bytes())
    assert main(["credit-bench", str(bench_file), str(copy), "--estimators", "grpo"]) == 0
    assert "32 trajectories in 8 groups" in capsys.readouterr().out


def write_records(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_cli_groups_mixed_scores_only_groups_whose_returns_differ(bench_file, tmp_path, capsys):
    records = [json.loads(line) for line in bench_file.read_text().splitlines()]
    ret = {r["id"]: sum(r["rewards"]) for r in records}
    failing = [g for g in dict.fromkeys(r["group"] for r in records)
               if sum(ret[r["id"]] == 0 for r in records if r["group"] == g) >= 2]
    assert failing, "the fixture needs a group with two failing members"
    whole_fail = failing[0]  # that group cut to its failing members: every return equal
    cut = [r for r in records if r["group"] != whole_fail or ret[r["id"]] == 0]
    without = [r for r in records if r["group"] != whole_fail]
    mixed_file = write_records(tmp_path / "cut.jsonl", cut)
    ref_file = write_records(tmp_path / "without.jsonl", without)
    out, ref, whole = (tmp_path / f"{n}.json" for n in ("mixed", "ref", "whole"))
    assert main(["credit-bench", str(mixed_file), "--groups", "mixed", "--json", str(out)]) == 0
    n_groups = len({r["group"] for r in records})
    assert f"{len(without)} trajectories in {n_groups - 1} groups (--groups mixed: " \
        f"{n_groups - 1} of {n_groups} groups)" in capsys.readouterr().out
    assert main(["credit-bench", str(ref_file), "--json", str(ref)]) == 0
    assert main(["credit-bench", str(mixed_file), "--json", str(whole)]) == 0
    strip = lambda rs: [{k: v for k, v in r.items() if k != "ms_per_1k_turns"} for r in rs]
    assert strip(read_rows(out)) == strip(read_rows(ref))  # as if the group were not there
    assert strip(read_rows(whole)) != strip(read_rows(ref))  # and without the flag it counts
    capsys.readouterr()
    only_fail = write_records(tmp_path / "fail.jsonl", [r for r in cut if r["group"] == whole_fail])
    assert main(["credit-bench", str(only_fail), "--groups", "mixed"]) == 2
    assert "every member has the same return" in capsys.readouterr().err


def test_cli_refuses_to_overwrite_inputs_and_outputs(bench_file, tmp_path, capsys):
    before = bench_file.read_bytes()
    for target in (bench_file, bench_file.with_name(bench_file.name + ".meta.json")):
        assert main(["credit-bench", str(bench_file), "--json", str(target), "--force"]) == 2
        assert "is the input" in capsys.readouterr().err
    assert bench_file.read_bytes() == before
    out = tmp_path / "taken.png"
    out.write_bytes(b"keep")
    assert main(["credit-bench", str(bench_file), "--png", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == b"keep"


def test_cli_does_not_import_what_a_file_names(bench_file, tmp_path, capsys):
    from creditgym.replay.io import read_trajectories, write_trajectories

    trajs = read_trajectories(bench_file)
    trajs[0].env_id = "bench_evil_module:Evil-v0"
    hostile = tmp_path / "hostile.jsonl"
    write_trajectories(hostile, trajs, {})
    assert main(["credit-bench", str(hostile)]) == 2
    assert "--allow-module bench_evil_module" in capsys.readouterr().err
    assert "bench_evil_module" not in sys.modules


def test_cli_text_only_records_are_refused(bench_file, tmp_path, capsys):
    from creditgym.replay.io import read_trajectories, write_trajectories

    trajs = read_trajectories(bench_file)
    trajs[3].action_ids = [[] for _ in trajs[3].action_ids]
    trajs[3].action_logprobs = [[] for _ in trajs[3].action_ids]
    text_only = tmp_path / "text.jsonl"
    write_trajectories(text_only, trajs, {})
    assert main(["credit-bench", str(text_only)]) == 2
    assert "no action token ids" in capsys.readouterr().err
