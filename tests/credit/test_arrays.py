"""_arrays: the validation, key coding and segment statistics shared by every estimator.

The estimator tests reach these helpers only with plain lists of string or small-int keys and
well-formed rows, so the paths here (numpy key arrays, empty segments, many groups, the error
messages a user reads) need their own checks. Every expected value is worked by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from creditgym.credit._arrays import (
    CreditInputError,
    as_float,
    check_lengths,
    factorize,
    mean_abs,
    per_trajectory,
    ragged,
    row_layout,
    seg_stats,
    split,
    to_hashable,
)


def test_as_float_refuses_a_2d_array_and_names_it_with_its_shape():
    with pytest.raises(CreditInputError,
                       match=r"^reward: expected a 1-D array, got shape \(1, 2\)$"):
        as_float("reward", [[1.0, 2.0]])


def test_check_lengths_names_every_array_when_there_are_no_rows():
    with pytest.raises(CreditInputError, match=r"^group, traj: no rows given; an estimator needs"):
        check_lengths(group=[], traj=[])


def test_to_hashable_turns_arrays_lists_and_dicts_into_nested_tuples():
    # anchors such as observation vectors or structured states must become dict keys that are
    # equal exactly when the anchors are equal; an array is keyed by its flattened values
    assert to_hashable(np.array([[1, 2], [3, 4]])) == (1, 2, 3, 4)
    assert to_hashable([1, [2, (3,)]]) == (1, (2, (3,)))
    # dict keys are stringified and sorted, so insertion order does not split one state in two
    assert to_hashable({"b": [1, 2], 7: {"c": 3}}) == (("7", (("c", 3),)), ("b", (1, 2)))


def test_an_unhashable_key_is_refused_naming_what_it_keys_and_its_type():
    with pytest.raises(CreditInputError, match=r"^a value of type set cannot be used as a key "
                                               r"\(use strings, numbers, or lists"):
        to_hashable({1, 2})
    anchors = np.array([[1], {2, 3}], dtype=object)  # a list first: the to_hashable path
    with pytest.raises(CreditInputError, match=r"^anchor: a value of type set cannot be used"):
        factorize("anchor", anchors)


def test_factorize_numeric_array_codes_follow_sorted_key_order_on_every_path():
    # numeric keys take a fast path (bincount for small non-negative ints, np.unique otherwise);
    # both rank keys in sorted order, so the codes (returned to users, e.g. GiGPO's step_group)
    # do not depend on which path ran or on the dtype
    cases = [
        (np.array([7, 3, 7, 0]), [2, 1, 2, 0]),  # small non-negative ints: bincount
        (np.array([-3, 2, -3]), [0, 1, 0]),  # negative: np.unique
        (np.array([10**6, 5, 10**6]), [1, 0, 1]),  # beyond the bincount bound: np.unique
        (np.array([1.7, 0.5, 1.5, 1.7]), [2, 0, 1, 2]),  # floats are not truncated to ints
        (np.array([True, False, True]), [1, 0, 1]),
    ]
    for keys, want in cases:
        codes, k = factorize("group", keys)
        assert codes.tolist() == want and k == max(want) + 1, keys
        assert codes.dtype == np.int64  # codes index arrays downstream


def test_factorize_string_and_object_arrays_code_in_first_appearance_order():
    codes, k = factorize("traj", np.array(["b", "a", "b"]))
    assert codes.tolist() == [0, 1, 0] and k == 2
    # None next to strings cannot be sorted, so object keys must not go through np.unique
    codes, k = factorize("anchor", np.array(["s1", None, "s1"], dtype=object))
    assert codes.tolist() == [0, 1, 0] and k == 2


def test_factorize_rows_of_a_2d_key_array_are_the_keys():
    # a batch of state vectors as one (rows, dim) array: each row is one anchor
    codes, k = factorize("anchor", np.array([[1, 2], [1, 2], [2, 1]]))
    assert codes.tolist() == [0, 0, 1] and k == 2


def test_row_layout_refuses_group_and_traj_of_different_lengths():
    with pytest.raises(CreditInputError, match=r"same length, got group=2, traj=3$"):
        row_layout(["g", "g"], ["a", "a", "b"])


def test_row_layout_names_the_trajectory_that_reappears_and_its_row():
    # 'b' is contiguous; 'a' comes back at row 3 after 'b': the message points at that row
    with pytest.raises(CreditInputError, match=r"^traj: rows of one trajectory must be "
                       r"contiguous; trajectory 'a' reappears at row 3 after other rows$"):
        row_layout(["g"] * 4, ["a", "b", "b", "a"])


def test_row_layout_names_the_row_when_the_traj_keys_cannot_be_indexed():
    # a sized, iterable but unindexable container (a dict view) still yields a usable message
    traj = {"r0": "a", "r1": "b", "r2": "a"}.values()
    with pytest.raises(CreditInputError, match=r"trajectory at row 2 reappears at row 2 after"):
        row_layout(["g"] * 3, traj)


def test_row_layout_with_many_groups_counts_trajectories_by_sorting():
    # 40 one-row trajectories, each in its own group: 40 x 40 possible (group, traj) keys exceed
    # the bincount bound (8 * rows + 1024), so distinct trajectories are counted with np.unique
    n = 40
    rows = row_layout(list(range(n)), [f"t{i}" for i in range(n)])
    assert rows.n_traj == n and rows.n_groups == n
    assert rows.starts.tolist() == list(range(n)) and rows.lengths.tolist() == [1] * n
    # the same path still catches a trajectory that comes back
    with pytest.raises(CreditInputError, match=r"trajectory 't0' reappears at row 40 after"):
        row_layout(list(range(n)) + [0], [f"t{i}" for i in range(n)] + ["t0"])


def test_per_trajectory_errors_name_the_input_and_the_row():
    rows = row_layout(["g"] * 3, ["a", "a", "b"])
    assert per_trajectory("success", [1, 0], rows).tolist() == [1.0, 0.0]
    with pytest.raises(CreditInputError,
                       match=r"^success: value changes inside a trajectory at row 1$"):
        per_trajectory("success", [1, 0, 1], rows)
    with pytest.raises(CreditInputError, match=r"^success: value at row 1 is nan"):
        per_trajectory("success", [1.0, np.nan, 1.0], rows)


def test_mean_abs_is_zero_for_an_empty_array():
    # diagnostics of a batch with nothing selected must stay finite, not NaN
    assert mean_abs(np.zeros(0)) == 0.0
    assert mean_abs(np.array([-1.0, 3.0])) == 2.0


def test_seg_stats_gives_zero_spread_to_all_equal_and_empty_segments():
    # segment 0 = {1, 3}: mean 2, sample var (1 + 1) / 1 = 2; segment 1 = {2, 2}: var exactly 0;
    # segment 2 has no members (n_seg larger than the codes used): count 0, mean 0, var 0
    st = seg_stats(np.array([1.0, 3.0, 2.0, 2.0]), np.array([0, 0, 1, 1]), 3, ddof=1)
    assert st.count.tolist() == [2.0, 2.0, 0.0]
    assert st.mean.tolist() == [2.0, 2.0, 0.0]
    assert st.var.tolist() == [2.0, 0.0, 0.0]
    assert st.std.tolist() == [np.sqrt(2.0), 0.0, 0.0]


def test_split_cuts_by_lengths_and_gives_no_pieces_for_no_lengths():
    pieces = split(np.arange(5.0), np.array([2, 0, 3]))
    assert [p.tolist() for p in pieces] == [[0.0, 1.0], [], [2.0, 3.0, 4.0]]
    assert split(np.zeros(0), np.zeros(0, dtype=np.int64)) == []


def test_ragged_of_no_sequences_is_empty():
    flat, lengths = ragged("probe_logprob", [])
    assert flat.shape == (0,) and flat.dtype == np.float64 and lengths.shape == (0,)
