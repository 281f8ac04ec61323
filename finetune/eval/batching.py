"""Cut requests into padded batches under a token budget, and put results back in order.

Pure: works on lengths and indices only, so it is tested without a model.

Items are sorted longest first. The first batch is then the largest one, so an out-of-memory
error shows at once instead of late in a run, and since every batch starts with its longest
item, its padded size is simply ``lengths[first] * rows``.

Items that open with the same tokens (the chat template and a shared system prompt or
few-shot example) are grouped first, so that a batch is made of rows sharing a prefix, which
the engine then computes once (see `prefix_groups` and `shared_prefix_len`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Batch:
    """A group of items padded to a common length.

    Attributes:
        indices: positions of the items in the caller's input, longest first.
        max_len: length every row is padded to (the length of the first item).
    """

    indices: tuple[int, ...]
    max_len: int

    @property
    def rows(self) -> int:
        return len(self.indices)

    @property
    def padded_tokens(self) -> int:
        return self.max_len * self.rows


def longest_first(lengths: Sequence[int]) -> list[int]:
    """Indices of `lengths` sorted by decreasing length; equal lengths keep input order."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


# The engine's padding rule for loss and choice batches (generation keeps full batches: its
# cost is the decoding steps, which batching shares): a batch stops growing when the next row
# would leave more than `MAX_PADDING` of its padded tokens as padding, once it holds
# `EFFICIENT_TOKENS` real tokens. Rows that long gain little from sharing a matmul, and a
# pad costs as much as a real token. Both are constants, so the batches depend on the
# requests and the token budget alone.
MAX_PADDING = 0.1
EFFICIENT_TOKENS = 2048


def rows_that_fit(max_len: int, batch_tokens: int, max_rows: int | None = None) -> int:
    """How many rows of `max_len` tokens fit in `batch_tokens` (at least one)."""
    rows = max(1, batch_tokens // max(1, max_len))
    return rows if max_rows is None else max(1, min(rows, max_rows))


def next_batch(
    order: Sequence[int],
    lengths: Sequence[int],
    start: int,
    *,
    batch_tokens: int,
    max_rows: int | None = None,
    max_padding: float | None = None,
    efficient_tokens: int = EFFICIENT_TOKENS,
) -> Batch:
    """The batch that begins at position `start` of `order` (a longest-first ordering).

    Args:
        order: item indices, longest first (see `longest_first`).
        lengths: length of each item, indexed by item.
        start: position in `order` where the batch begins; must be < len(order).
        batch_tokens: budget on ``max_len * rows``; an item longer than the budget gets a
            batch of its own.
        max_rows: optional cap on rows per batch.
        max_padding: when set, the batch stops before a row that would make more than this
            fraction of its padded tokens padding, once it holds `efficient_tokens` real
            tokens (see `MAX_PADDING`).
        efficient_tokens: real tokens a batch takes regardless of `max_padding`.

    Returns:
        The batch; the next one begins at ``start + batch.rows``.
    """
    assert 0 <= start < len(order), "no item left to batch"
    max_len = lengths[order[start]]
    rows = min(rows_that_fit(max_len, batch_tokens, max_rows), len(order) - start)
    if max_padding is not None:
        real = max_len
        for taken in range(1, rows):
            padded = (taken + 1) * max_len
            added = lengths[order[start + taken]]
            if real >= efficient_tokens and padded - real - added > max_padding * padded:
                rows = taken
                break
            real += added
    return Batch(indices=tuple(order[start : start + rows]), max_len=max_len)


def plan_batches(
    lengths: Sequence[int], *, batch_tokens: int, max_rows: int | None = None
) -> list[Batch]:
    """Sort items longest first and cut them into batches under the token budget.

    Args:
        lengths: padded length each item needs (prompt plus any generated tokens).
        batch_tokens: budget on ``max_len * rows`` of each batch.
        max_rows: optional cap on rows per batch.

    Returns:
        Batches covering every item exactly once, longest batch first.

    Raises:
        ValueError: a non-positive budget or row cap.
    """
    if batch_tokens < 1 or (max_rows is not None and max_rows < 1):
        raise ValueError(f"batch_tokens={batch_tokens} and max_rows={max_rows} must be >= 1")
    order = longest_first(lengths)
    batches: list[Batch] = []
    start = 0
    while start < len(order):
        batch = next_batch(order, lengths, start, batch_tokens=batch_tokens, max_rows=max_rows)
        batches.append(batch)
        start += batch.rows
    return batches


def prefix_groups(
    seqs: Sequence[Sequence[int]], lengths: Sequence[int], *, key_tokens: int
) -> list[list[int]]:
    """Group items whose first `key_tokens` tokens agree, each group longest first.

    Items shorter than `key_tokens`, and items that share their opening with no other item,
    form one more group. Groups are ordered by their longest item, so the first batch of a
    run is still the largest one.

    Args:
        seqs: each item's tokens (only the first `key_tokens` are read).
        lengths: padded length each item needs, indexed like `seqs`.
        key_tokens: how many opening tokens two items must share to be grouped (>= 1).

    Returns:
        Groups of item indices covering every item exactly once.
    """
    if key_tokens < 1:
        raise ValueError(f"key_tokens={key_tokens} must be >= 1")
    by_key: dict[tuple[int, ...] | None, list[int]] = {}
    for i, seq in enumerate(seqs):
        key = tuple(seq[:key_tokens]) if len(seq) >= key_tokens else None
        by_key.setdefault(key, []).append(i)
    loners = by_key.pop(None, [])
    groups = []
    for members in by_key.values():
        if len(members) == 1:
            loners += members
        else:
            groups.append(members)
    if loners:
        groups.append(loners)
    ordered = [sorted(g, key=lambda i: (-lengths[i], i)) for g in groups]
    return sorted(ordered, key=lambda g: (-lengths[g[0]], g[0]))


def shared_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix common to every sequence (0 for none)."""
    if not seqs:
        return 0
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for seq in seqs[1:]:
        k = 0
        while k < n and seq[k] == first[k]:
            k += 1
        n = k
        if n == 0:
            break
    return n


def restore_order(n_items: int, answered: Iterable[tuple[int, T]]) -> list[T]:
    """Put `(index, result)` pairs back into input order.

    Args:
        n_items: number of items of the input.
        answered: one `(index, result)` pair per item, in any order.

    Returns:
        Results in input order.

    Raises:
        ValueError: an index is missing, repeated or out of range.
    """
    slots: list[T | None] = [None] * n_items
    filled = [False] * n_items
    for index, result in answered:
        if not 0 <= index < n_items or filled[index]:
            raise ValueError(f"result index {index} is out of range or repeated")
        slots[index] = result
        filled[index] = True
    if not all(filled):
        missing = [i for i, done in enumerate(filled) if not done]
        raise ValueError(f"no result for items {missing[:10]}")
    return slots  # type: ignore[return-value]
