"""Word sorting (SPEC §7): sort 2-20 basic English words; scored by reference loss.

A pure function of the round seed: the same seed gives byte-identical samples everywhere.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from importlib import resources
from random import Random

from finetune.datasets.samples import ReferenceSample
from finetune.errors import DataUnavailable

# XOR-ed into the round seed so this task's draws are independent of other tasks' draws
# ("WORD" in ASCII). Changing it changes every sample: bump the task version if you do.
WORD_SORTING_SEED_XOR = 0x574F5244
MIN_WORDS = 2
MAX_WORDS = 20
PROMPT_PREFIX = "Sort the following words alphabetically: "

_VALID_WORD = re.compile(r"[a-z]{3,}")


@functools.lru_cache(maxsize=1)
def load_word_list() -> tuple[str, ...]:
    """The bundled word list (`data/words.txt`): sorted, distinct, lower-case, >= 3 letters.

    Returns:
        The words, sorted so that draws do not depend on the file's line order.
    """
    text = resources.files("finetune.datasets").joinpath("data/words.txt").read_text("utf-8")
    return _clean(text.split())


def generate_word_sorting(
    seed: int, count: int, words: Sequence[str] | None = None
) -> list[ReferenceSample]:
    """Draw `count` word sorting samples.

    Each sample lists 2-20 distinct words in random order; the reference is the same words
    sorted and joined by single spaces.

    Args:
        seed: Round seed; drawn with `Random(seed ^ WORD_SORTING_SEED_XOR)`.
        count: Number of samples (>= 0).
        words: Word pool; defaults to the bundled list. Entries that are not lower-case
            alphabetic words of >= 3 letters are ignored, duplicates dropped.

    Returns:
        `count` samples with prompt "Sort the following words alphabetically: w1 w2 ... wn."

    Raises:
        ValueError: `count` is negative.
        DataUnavailable: the pool has fewer than `MAX_WORDS` usable words.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    pool = load_word_list() if words is None else _clean(words)
    if len(pool) < MAX_WORDS:
        raise DataUnavailable(
            f"word sorting needs at least {MAX_WORDS} distinct words, got {len(pool)}",
            task="word_sorting",
        )
    rng = Random(seed ^ WORD_SORTING_SEED_XOR)
    samples = []
    for _ in range(count):
        chosen = rng.sample(pool, rng.randint(MIN_WORDS, MAX_WORDS))
        samples.append(
            ReferenceSample(
                prompt=f"{PROMPT_PREFIX}{' '.join(chosen)}.",
                reference=" ".join(sorted(chosen)),
            )
        )
    return samples


def _clean(words: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted({w for w in words if _VALID_WORD.fullmatch(w)}))
