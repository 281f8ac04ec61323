"""Loaders of reference draws (`DataRules.draws="reference"`, protocol `reference-3.1`).

Each reproduces one loader of the reference validator (macrocosm-os/finetuning 3.1.0) for the
round seed: the same `random` calls in the same order on a private `random.Random(seed)` (the
reference reseeds the global RNG with that seed in every loader), the same requests
(`finetune.datasets.reference_pages`) and the same samples
(`finetune.datasets.reference_shapers`, `finetune.datasets.reference_generated`):

- SYNTHETIC-1-SFT: one fetch call of `pages` pages (rows_per_page 150), then up to ten more of
  1, 2, 4, 8, 16, 16, ... pages while fewer than `count` (the reference's target size, 120)
  samples are parsed; samples in page and row order, the first `count`.
- codeforces-cots: one call of `pages` pages (rows_per_page 120); every two-message row under
  the length estimate, in row order (at most 100 rows a page on the real server).
- FineWeb: one call of `pages` (4) pages of 100; every row's text, in order.
- Word sorting (400 samples) and Dyck (100): generated from the seed.

`count` caps the samples (the task's ``samples``); with the mainnet counts it never cuts what
the reference keeps. Options shared with salted draws that the reference has no equivalent of
(`config`, `split`, `max_pages`, `max_chars`) are not read here.

Ours (both protocols): a local override file, or the bundled sample when offline, replaces the
datasets-server; it is read whole and in file order (the reference has no local source, so
there are no page draws to reproduce), with the reference's row rules. Request deadlines,
body caps and pinned revisions hold as in salted draws.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from random import Random
from typing import Any

from finetune.datasets.config import DataConfig
from finetune.datasets.http import DatasetsServerClient
from finetune.datasets.reference_generated import dyck_samples, word_sorting_samples
from finetune.datasets.reference_pages import ReferencePager
from finetune.datasets.reference_shapers import (
    codeforces_entry,
    codeforces_sample,
    fineweb_entry,
    fineweb_sample,
    sft_entry,
    sft_sample,
)
from finetune.datasets.samples import ReferenceSample, Sample
from finetune.datasets.sources import RowSource, check_revision, local_rows
from finetune.errors import ConfigError

logger = logging.getLogger(__name__)

Options = Mapping[str, Any]
Sleep = Callable[[float], None]

MORE_ROUNDS = 10  # SYNTHETIC-1-SFT: fetch calls after the first, at most
MAX_ROUND_PAGES = 16  # pages of one such call double from 1 up to this


def load_synthetic_1_sft(
    seed: int, count: int, options: Options, config: DataConfig, sleep: Sleep
) -> list[Sample]:
    """SYNTHETIC-1-SFT as the reference's `Synthetic1SFTLoader` loads it (target = `count`)."""
    task_types = tuple(t.strip() for t in str(options["task_types"]).split(",") if t.strip())
    if not task_types:
        raise ConfigError("synthetic_1_sft: option task_types names no task type")
    if count <= 0:
        return []
    collected = _SftSamples(task_types, count)
    source = RowSource.from_options("synthetic_1_sft", options, "synthetic_1_sample.jsonl")
    rows = local_rows(source, config)
    if rows is not None:
        collected.add([sft_entry(row) for row in rows])  # every row read, as on a page
        return list(collected.samples)
    pager = _pager(seed, source, options, config, sleep)
    if int(options["pages"]):
        collected.add(pager.fetch(int(options["pages"]), sft_entry))
    pages = 1
    for _ in range(MORE_ROUNDS):
        if collected.full:
            break
        collected.add(pager.fetch(pages, sft_entry))
        pages = min(2 * pages, MAX_ROUND_PAGES)
    if not collected.full:
        logger.warning(
            "synthetic_1_sft: %d of %d samples after %d more fetch calls",
            len(collected.samples), count, MORE_ROUNDS,
        )  # fmt: skip
    return list(collected.samples)


class _SftSamples:
    """Parsed samples in buffer order; parsing stops at the target, as the reference's does."""

    def __init__(self, task_types: tuple[str, ...], target: int) -> None:
        self._task_types = task_types
        self._target = target
        self.samples: list[ReferenceSample] = []

    @property
    def full(self) -> bool:
        return len(self.samples) >= self._target

    def add(self, entries: Iterable[tuple[Any, Any]]) -> None:
        for messages, task_type in entries:
            if self.full:
                return
            sample = sft_sample(messages, task_type, self._task_types)
            if sample is not None:
                self.samples.append(sample)


def load_codeforces_cots(
    seed: int, count: int, options: Options, config: DataConfig, sleep: Sleep
) -> list[Sample]:
    """codeforces-cots as the reference's `CodeforcesCOTSLoader` loads it (at most `count`)."""
    limit = int(options["max_estimated_tokens"])
    if count <= 0:
        return []
    source = RowSource.from_options("codeforces_cots", options, "codeforces_sample.jsonl")
    entries = _entries(seed, source, codeforces_entry, options, config, sleep)
    # Every kept row is shaped before the cut: the reference tokenizes them all.
    kept = [s for s in (codeforces_sample(e, limit) for e in entries) if s is not None]
    return list(kept[:count])


def load_fineweb(
    seed: int, count: int, options: Options, config: DataConfig, sleep: Sleep
) -> list[Sample]:
    """FineWeb-Edu as the reference's `HuggingFaceLoader` loads it (at most `count`)."""
    if count <= 0:
        return []
    source = RowSource.from_options("fineweb", options, "fineweb_sample.jsonl")
    texts = _entries(seed, source, fineweb_entry, options, config, sleep)
    samples = [fineweb_sample(text) for text in texts]
    return list(samples[:count])


def load_word_sorting(
    seed: int, count: int, options: Options, config: DataConfig, sleep: Sleep
) -> list[Sample]:
    """Word sorting as the reference's `WordSortingLoader` generates it (en-basic words)."""
    return list(word_sorting_samples(seed, count))


def load_dyck(
    seed: int, count: int, options: Options, config: DataConfig, sleep: Sleep
) -> list[Sample]:
    """Dyck completion as the reference's `DyckLoader` generates it."""
    return list(dyck_samples(seed, count))



def _entries(
    seed: int, source: RowSource, parse: Callable[[Any], Any], options: Options, config: DataConfig,
    sleep: Sleep,
) -> list:
    """Each row parsed: every row of a local override file, else the `pages` pages the
    reference's paging draws (none when `pages` is 0)."""
    rows = local_rows(source, config)
    if rows is not None:
        return [parse(row) for row in rows]
    pages = int(options["pages"])
    pager = _pager(seed, source, options, config, sleep)
    return pager.fetch(pages, parse) if pages else []


def _pager(
    seed: int, source: RowSource, options: Options, config: DataConfig, sleep: Sleep
) -> ReferencePager:
    rows_per_page, pages = int(options["rows_per_page"]), int(options["pages"])
    if rows_per_page < 1 or pages < 0:
        raise ConfigError(
            f"{source.loader_id}: need rows_per_page >= 1 and pages >= 0, got "
            f"{rows_per_page} and {pages}",
            dataset=source.loader_id,
        )
    client = DatasetsServerClient(config, sleep=sleep)
    check_revision(client, source, config)
    rng = Random(seed)  # the reference: random.seed(seed), then /size, then draws
    return ReferencePager(
        client,
        source.hub_id,
        rng,
        rows_per_page,
        sleep=sleep,
        max_wait_s=config.max_retry_after_s,
    )


__all__ = [
    "load_codeforces_cots",
    "load_dyck",
    "load_fineweb",
    "load_synthetic_1_sft",
    "load_word_sorting",
]
