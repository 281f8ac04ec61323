"""Dyck language completion (SPEC §7): close the last 1-3 brackets of a balanced sequence.

A pure function of the round seed: the same seed gives byte-identical samples everywhere.
"""

from __future__ import annotations

from random import Random

from finetune.datasets.samples import ReferenceSample

# XOR-ed into the round seed so this task's draws are independent of other tasks' draws
# ("DYCK" in ASCII). Changing it changes every sample: bump the task version if you do.
DYCK_SEED_XOR = 0x4459434B
MIN_PAIRS = 2
MAX_PAIRS = 20
MAX_REMOVED = 3
PAIRS = {"(": ")", "[": "]", "{": "}", "<": ">"}
_OPENERS = tuple(PAIRS)
_CLOSERS = frozenset(PAIRS.values())
PROMPT_PREFIX = (
    "Complete the rest of the sequence, making sure that the parentheses are closed properly. "
    "Input: "
)


def is_balanced(sequence: str) -> bool:
    """Whether `sequence` (brackets, optionally separated by whitespace) is a Dyck word.

    Args:
        sequence: Characters from `()[]{}<>` and whitespace.

    Returns:
        True iff every bracket is closed by its matching bracket in the right order;
        False also when any other character appears.
    """
    stack: list[str] = []
    for char in sequence:
        if char.isspace():
            continue
        if char in PAIRS:
            stack.append(PAIRS[char])
        elif char in _CLOSERS and stack and stack[-1] == char:
            stack.pop()
        else:
            return False
    return not stack


def generate_dyck(seed: int, count: int) -> list[ReferenceSample]:
    """Draw `count` Dyck completion samples.

    Each sample is a random balanced sequence of 2-20 pairs. The prompt shows all but the last
    1-3 characters, which are always closing brackets; the reference is those closers.
    Characters are separated by single spaces in both.

    Args:
        seed: Round seed; drawn with `Random(seed ^ DYCK_SEED_XOR)`.
        count: Number of samples (>= 0).

    Returns:
        `count` reference samples.

    Raises:
        ValueError: `count` is negative.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = Random(seed ^ DYCK_SEED_XOR)
    samples = []
    for _ in range(count):
        sequence = _random_dyck(rng, rng.randint(MIN_PAIRS, MAX_PAIRS))
        # Only the trailing run of closers may be removed, so the answer is all closers.
        removed = rng.randint(1, min(MAX_REMOVED, _trailing_closers(sequence)))
        samples.append(
            ReferenceSample(
                prompt=PROMPT_PREFIX + " ".join(sequence[:-removed]),
                reference=" ".join(sequence[-removed:]),
            )
        )
    return samples


def _trailing_closers(sequence: list[str]) -> int:
    run = 0
    while run < len(sequence) and sequence[-1 - run] in _CLOSERS:
        run += 1
    return run


def _random_dyck(rng: Random, pairs: int) -> list[str]:
    """A random balanced sequence: open while pairs remain, with probability 1/2 when a
    bracket is already open, so nesting depth varies."""
    out: list[str] = []
    stack: list[str] = []
    to_open = pairs
    while to_open or stack:
        if to_open and (not stack or rng.random() < 0.5):
            opener = rng.choice(_OPENERS)
            out.append(opener)
            stack.append(PAIRS[opener])
            to_open -= 1
        else:
            out.append(stack.pop())
    return out
