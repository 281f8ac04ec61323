"""Drawing shaped samples from a row source: a local override, a bundled sample or remote pages.

The order is fixed (see `DataConfig`): override file, then the bundled sample when offline,
then the datasets-server. Every choice (which rows, which pages) comes from the `rng` the
loader passes in, which is seeded from the round seed, so two validators draw the same data.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from finetune.datasets.config import DataConfig
from finetune.datasets.http import MAX_PAGE_ROWS, DatasetsServerClient, SplitSize
from finetune.datasets.local_files import bundled_file, find_override, read_rows
from finetune.errors import DataUnavailable

logger = logging.getLogger(__name__)

S = TypeVar("S")
Shaper = Callable[[Mapping[str, Any]], S]

_PAGE_PICK_TRIES = 50  # draws to find a page not fetched yet before giving up on new ones


@dataclass(frozen=True)
class RowSource:
    """Where the rows of one loader come from.

    Attributes:
        loader_id: Registry id; names the override file and may key a pinned revision.
        hub_id: Hugging Face dataset id.
        config: Dataset config; empty means any config except "default", drawn per page
            (FineWeb keeps one config per crawl dump).
        split: Dataset split.
        bundled: File name of the offline sample under ``finetune/datasets/data``.
    """

    loader_id: str
    hub_id: str
    config: str
    split: str
    bundled: str | None = None

    @classmethod
    def from_options(cls, loader_id: str, options: Mapping[str, Any], bundled: str) -> RowSource:
        """The source a loader's options name (``dataset_id``, ``config``, ``split``)."""
        return cls(
            loader_id=loader_id,
            hub_id=str(options["dataset_id"]),
            config=str(options["config"]),
            split=str(options["split"]),
            bundled=bundled,
        )


def draw_samples(
    source: RowSource,
    shape: Shaper[S],
    rng: random.Random,
    count: int,
    config: DataConfig,
    *,
    max_pages: int = 0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[S]:
    """Up to `count` samples shaped from rows of `source`; fewer if fewer are usable.

    Args:
        source: Where the rows live.
        shape: Row -> sample; raises ValueError for a row it cannot use (logged, skipped).
        rng: The loader's own seeded generator.
        count: How many samples are wanted.
        config: Offline switch, override folder, endpoint and retry settings.
        max_pages: Remote pages to fetch at most; 0 means three times the pages needed.
        sleep: How to wait between HTTP attempts (tests pass a recorder).

    Returns:
        The samples, in an order drawn from `rng`.

    Raises:
        DataUnavailable: No source could be read (network failure after retries, pinned
            revision not served, offline without a sample file).
    """
    if count <= 0:
        return []
    rows = local_rows(source, config)
    if rows is not None:
        return _from_rows(rows, shape, rng, count, source.loader_id)
    pages = max_pages or 3 * math.ceil(count / MAX_PAGE_ROWS)
    return _from_remote(source, shape, rng, count, config, pages, sleep)


def local_rows(source: RowSource, config: DataConfig) -> list[dict[str, Any]] | None:
    """The rows of the local override file, else (offline) of the bundled sample.

    Returns:
        The rows in file order, or None when the rows must come from the datasets-server.

    Raises:
        DataUnavailable: Offline without an override file or a bundled sample, or a file
            that cannot be read.
    """
    override = find_override(config.data_dir, source.loader_id)
    if override is not None:
        logger.info("%s: reading local file %s", source.loader_id, override)
        return read_rows(override)
    if not config.offline:
        return None
    if source.bundled is None:
        raise DataUnavailable(
            f"{source.loader_id}: offline, and no {source.loader_id}.jsonl/.parquet in "
            f"data_dir={config.data_dir}",
            dataset=source.loader_id,
        )
    return read_rows(bundled_file(source.bundled))


def _from_rows(
    rows: Sequence[Mapping[str, Any]], shape: Shaper[S], rng: random.Random, count: int, name: str
) -> list[S]:
    order = list(range(len(rows)))
    rng.shuffle(order)
    samples: list[S] = []
    skipped: Counter[str] = Counter()
    for index in order:
        if len(samples) == count:
            break
        _shape_into(rows[index], shape, samples, skipped)
    _log_skipped(name, skipped)
    if len(samples) < count:
        logger.info("%s: %d of %d samples available", name, len(samples), count)
    return samples


def _shape_into(
    row: Mapping[str, Any], shape: Shaper[S], samples: list[S], skipped: Counter[str]
) -> None:
    try:
        samples.append(shape(row))
    except ValueError as exc:
        skipped[str(exc)] += 1


def _log_skipped(name: str, skipped: Counter[str]) -> None:
    if skipped:
        reasons = "; ".join(f"{reason} (x{n})" for reason, n in skipped.most_common(5))
        logger.warning("%s: skipped %d malformed rows: %s", name, sum(skipped.values()), reasons)


def _from_remote(
    source: RowSource,
    shape: Shaper[S],
    rng: random.Random,
    count: int,
    config: DataConfig,
    max_pages: int,
    sleep: Callable[[float], None],
) -> list[S]:
    client = DatasetsServerClient(config, sleep=sleep)
    check_revision(client, source, config)
    candidates = _candidate_splits(client.splits(source.hub_id), source)
    samples: list[S] = []
    skipped: Counter[str] = Counter()
    seen: set[tuple[str, int]] = set()
    for _ in range(max_pages):
        page = _pick_page(rng, candidates, seen)
        if page is None:
            break
        split, offset = page
        length = min(MAX_PAGE_ROWS, split.num_rows - offset)
        fetched = client.rows(
            source.hub_id, split.config, split.split, offset=offset, length=length
        )
        for row in fetched.rows:
            _shape_into(row, shape, samples, skipped)
        if len(samples) >= count:
            break
    _log_skipped(source.loader_id, skipped)
    rng.shuffle(samples)
    if len(samples) < count:
        logger.info("%s: %d of %d samples available", source.loader_id, len(samples), count)
    return samples[:count]


def check_revision(client: DatasetsServerClient, source: RowSource, config: DataConfig) -> None:
    """Ours (both protocols): a pinned revision must be the one the datasets-server serves.

    Raises:
        DataUnavailable: The Hub's current sha differs from the pin (``revision_mismatch``).
    """
    pinned = config.revision_for(source.hub_id, source.loader_id)
    if pinned is None:
        return
    current = client.current_sha(source.hub_id)
    if not current.startswith(pinned):
        raise DataUnavailable(
            f"{source.hub_id} is pinned to revision {pinned} but the datasets-server serves "
            f"{current}; supply the pinned rows as {source.loader_id}.jsonl in data_dir or "
            "update the pin",
            reason="revision_mismatch",
            dataset=source.hub_id,
        )


def _candidate_splits(splits: Sequence[SplitSize], source: RowSource) -> list[SplitSize]:
    matching = [s for s in splits if s.split == source.split and s.num_rows > 0]
    if source.config:
        matching = [s for s in matching if s.config == source.config]
    else:
        dumps = [s for s in matching if s.config != "default"]
        matching = dumps or matching
    if not matching:
        known = sorted({(s.config, s.split) for s in splits})
        raise DataUnavailable(
            f"{source.hub_id} has no non-empty config={source.config or '<any>'!r} "
            f"split={source.split!r}; it has {known}",
            dataset=source.hub_id,
        )
    return sorted(matching, key=lambda s: (s.config, s.split))  # server order may vary


def _pick_page(
    rng: random.Random, candidates: Sequence[SplitSize], seen: set[tuple[str, int]]
) -> tuple[SplitSize, int] | None:
    for _ in range(_PAGE_PICK_TRIES):
        split = candidates[rng.randrange(len(candidates))]
        pages = -(-split.num_rows // MAX_PAGE_ROWS)  # integer ceil: no float overflow
        offset = rng.randrange(pages) * MAX_PAGE_ROWS
        if (split.config, offset) not in seen:
            seen.add((split.config, offset))
            return split, offset
    return None


__all__ = ["RowSource", "check_revision", "draw_samples", "local_rows"]
