"""The reference validator's generated data sets (`DataRules.draws="reference"`).

Word sorting and Dyck completion as macrocosm-os/finetuning 3.1.0 generates them
(`WordSortingLoader`, `DyckLoader`): the same calls in the same order on a private
`random.Random(seed)` (the reference seeds the global RNG with the round seed), so the samples
are byte-identical. Each sample depends only on the draws before it, so the first n samples of
a longer run are those of a run of n (the reference makes 400 word-sorting and 100 Dyck samples).
"""

from __future__ import annotations

import functools
from importlib import resources
from random import Random

from finetune.datasets.samples import ReferenceSample

WORD_SORTING_PROMPT = "Sort the following words alphabetically: "
MIN_WORDS = 2
MAX_WORDS = 20
MIN_WORD_LENGTH = 3

DYCK_PROMPT = (
    "Complete the rest of the sequence, making sure that the parentheses are closed properly. "
    "Input: "
)
DYCK_PAIRS = (("<", ">"), ("[", "]"), ("{", "}"), ("(", ")"))  # this order: choice() indexes it
MIN_PAIRS = 2
MAX_PAIRS = 20
MIN_ANSWER = 1
MAX_ANSWER = 3


@functools.lru_cache(maxsize=1)
def basic_english_pool() -> tuple[str, ...]:
    """The reference's word pool: the 832 words of `data/en-basic` with >= 3 letters, lower-cased.

    The order is the file's (what `random.sample` indexes), duplicates and all (there are
    none). NLTK reads the list line by line and drops blank lines; so does this.
    """
    text = resources.files("finetune.datasets").joinpath("data/en-basic").read_text("utf-8")
    lines = [line for line in text.splitlines() if line.rstrip()]
    return tuple(word.lower() for word in lines if len(word) >= MIN_WORD_LENGTH)


def word_sorting_samples(seed: int, count: int) -> list[ReferenceSample]:
    """`count` word-sorting samples as the reference draws them for `seed`.

    Per sample: ``k = randint(2, 20)``, ``words = sample(pool, k)``; the prompt lists the words
    in drawn order and ends with ``". "`` (a trailing space, as in the reference); the reference
    text is the words sorted, joined by single spaces.

    Raises:
        ValueError: `count` is negative.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    pool = list(basic_english_pool())
    rng = Random(seed)
    samples = []
    for _ in range(count):
        words = rng.sample(pool, rng.randint(MIN_WORDS, MAX_WORDS))
        samples.append(
            ReferenceSample(
                prompt=WORD_SORTING_PROMPT + " ".join(words) + ". ",
                reference=" ".join(sorted(words)),
            )
        )
    return samples


def dyck_samples(seed: int, count: int) -> list[ReferenceSample]:
    """`count` Dyck completion samples as the reference draws them for `seed`.

    Per sample: the answer length ``r = randint(1, 3)``, the pairs ``p = randint(max(r, 2),
    20)``, then a word of 2p brackets ending in r closers (`_dyck_word`). The prompt shows all
    but the last r brackets, space-separated; the reference text is those r closers.

    Raises:
        ValueError: `count` is negative.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = Random(seed)
    samples = []
    for _ in range(count):
        answer_length = rng.randint(MIN_ANSWER, MAX_ANSWER)
        pairs = rng.randint(max(answer_length, MIN_PAIRS), MAX_PAIRS)
        word = _dyck_word(rng, pairs, answer_length)
        samples.append(
            ReferenceSample(
                prompt=DYCK_PROMPT + " ".join(word[:-answer_length]),
                reference=" ".join(word[-answer_length:]),
            )
        )
    return samples


def _dyck_word(rng: Random, pairs: int, closing_tail: int) -> str:
    """A balanced word of `pairs` pairs whose last `closing_tail` brackets are closers.

    At each of the 2 * pairs steps: open while pairs remain unopened and either nothing is
    open, or exactly `closing_tail` closers remain to be placed, or a fair coin says so
    (``choice([True, False])``, drawn only when neither earlier condition holds); else close
    the innermost open bracket.
    """
    opened = 0
    closers_left = pairs
    pending: list[str] = []
    out: list[str] = []
    for _ in range(2 * pairs):
        if opened < pairs and (
            not pending or closers_left == closing_tail or rng.choice([True, False])
        ):
            opener, closer = rng.choice(DYCK_PAIRS)
            out.append(opener)
            pending.append(closer)
            opened += 1
        else:
            out.append(pending.pop())
            closers_left -= 1
    return "".join(out)


__all__ = ["basic_english_pool", "dyck_samples", "word_sorting_samples"]
