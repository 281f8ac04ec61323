from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finetune.eval.batching import (
    Batch,
    longest_first,
    next_batch,
    plan_batches,
    prefix_groups,
    restore_order,
    rows_that_fit,
    shared_prefix_len,
)

lengths_st = st.lists(st.integers(min_value=1, max_value=300), max_size=60)


@settings(max_examples=150, deadline=None)
@given(
    lengths=lengths_st,
    budget=st.integers(min_value=1, max_value=2000),
    max_rows=st.one_of(st.none(), st.integers(min_value=1, max_value=9)),
)
def test_plan_covers_every_item_once_within_budget(lengths, budget, max_rows):
    batches = plan_batches(lengths, batch_tokens=budget, max_rows=max_rows)
    flat = [i for b in batches for i in b.indices]
    assert sorted(flat) == list(range(len(lengths)))
    for b in batches:
        assert b.max_len == max(lengths[i] for i in b.indices)
        # Only a lone item may exceed the budget.
        assert b.padded_tokens <= budget or b.rows == 1
        if max_rows is not None:
            assert b.rows <= max_rows
    # Longest first, over and within batches.
    assert [lengths[i] for i in flat] == sorted((lengths[i] for i in flat), reverse=True)


@settings(max_examples=100, deadline=None)
@given(lengths=lengths_st, budget=st.integers(min_value=1, max_value=2000))
def test_batches_are_as_full_as_the_budget_allows(lengths, budget):
    batches = plan_batches(lengths, batch_tokens=budget)
    for b, following in zip(batches, batches[1:], strict=False):
        # The next item would not have fitted: adding a row breaks the budget.
        assert b.max_len * (b.rows + 1) > budget
        assert following.max_len <= b.max_len


@settings(max_examples=100, deadline=None)
@given(lengths=lengths_st, budget=st.integers(min_value=1, max_value=500))
def test_restore_order_is_exact(lengths, budget):
    items = [f"item{i}:{n}" for i, n in enumerate(lengths)]
    answered = []
    for b in plan_batches(lengths, batch_tokens=budget):
        answered += [(i, items[i].upper()) for i in b.indices]
    assert restore_order(len(items), answered) == [s.upper() for s in items]


def test_sorting_is_stable_for_equal_lengths():
    assert longest_first([4, 4, 4]) == [0, 1, 2]
    assert longest_first([1, 5, 3, 5]) == [1, 3, 2, 0]


def test_equal_lengths_split_evenly():
    batches = plan_batches([10] * 7, batch_tokens=30)
    assert [b.indices for b in batches] == [(0, 1, 2), (3, 4, 5), (6,)]
    assert all(b.max_len == 10 for b in batches)


def test_over_budget_item_gets_its_own_batch():
    batches = plan_batches([5, 100, 5], batch_tokens=20)
    assert batches[0] == Batch(indices=(1,), max_len=100)
    assert batches[1] == Batch(indices=(0, 2), max_len=5)


def test_empty_and_single_item():
    assert plan_batches([], batch_tokens=10) == []
    assert restore_order(0, []) == []
    assert plan_batches([7], batch_tokens=1) == [Batch(indices=(0,), max_len=7)]


def test_max_rows_caps_rows():
    batches = plan_batches([1] * 10, batch_tokens=1000, max_rows=4)
    assert [b.rows for b in batches] == [4, 4, 2]


def test_next_batch_from_a_later_start_with_a_smaller_budget():
    lengths = [8, 8, 8, 8, 2]
    order = longest_first(lengths)
    assert next_batch(order, lengths, 0, batch_tokens=32).indices == (0, 1, 2, 3)
    assert next_batch(order, lengths, 1, batch_tokens=16).indices == (1, 2)


def test_rows_that_fit():
    assert rows_that_fit(10, 35) == 3
    assert rows_that_fit(10, 5) == 1
    assert rows_that_fit(10, 1000, max_rows=2) == 2


def test_bad_budget_is_rejected():
    with pytest.raises(ValueError):
        plan_batches([1], batch_tokens=0)
    with pytest.raises(ValueError):
        plan_batches([1], batch_tokens=5, max_rows=0)


@pytest.mark.parametrize(
    "answered",
    [[(0, "a")], [(0, "a"), (0, "b")], [(0, "a"), (2, "b")], [(0, "a"), (-1, "b")]],
)
def test_restore_order_rejects_missing_repeated_or_foreign_indices(answered):
    with pytest.raises(ValueError):
        restore_order(2, answered)


def test_shared_prefix_len():
    assert shared_prefix_len([]) == 0
    assert shared_prefix_len([(1, 2, 3)]) == 3
    assert shared_prefix_len([(1, 2, 3, 4), (1, 2, 9), (1, 2, 3)]) == 2
    assert shared_prefix_len([(1, 2), (1, 2, 3)]) == 2
    assert shared_prefix_len([(5, 2), (1, 2)]) == 0


def test_prefix_groups_group_shared_openings_longest_first():
    a, b = (1, 1, 1), (2, 2, 2)
    seqs = [a + (0,) * 3, b + (0,), a + (0,) * 9, (7,), b + (0,) * 5, (3, 3, 3, 3), a]
    lengths = [len(s) for s in seqs]
    groups = prefix_groups(seqs, lengths, key_tokens=3)
    # `a` rows, `b` rows, then the rows that share their opening with nobody (or are short).
    assert groups == [[2, 0, 6], [4, 1], [5, 3]]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 2), min_size=0, max_size=6), min_size=0, max_size=30),
    st.integers(1, 3),
)
def test_prefix_groups_partition_and_order(seqs, key_tokens):
    lengths = [len(s) + 1 for s in seqs]
    groups = prefix_groups(seqs, lengths, key_tokens=key_tokens)
    assert sorted(i for g in groups for i in g) == list(range(len(seqs)))
    for group in groups:
        assert [lengths[i] for i in group] == sorted((lengths[i] for i in group), reverse=True)
        keyed = [tuple(seqs[i][:key_tokens]) for i in group if len(seqs[i]) >= key_tokens]
        if len(group) > 1 and len(keyed) == len(group) and len(set(keyed)) == 1:
            continue  # a group of one opening
        # otherwise the leftover group: each of its openings occurs once in the whole input
        everywhere = [tuple(s[:key_tokens]) for s in seqs if len(s) >= key_tokens]
        assert all(everywhere.count(k) == 1 for k in keyed)
    firsts = [lengths[g[0]] for g in groups]
    assert firsts == sorted(firsts, reverse=True)
