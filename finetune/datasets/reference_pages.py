"""The reference validator's page draws from the datasets-server (`DataRules.draws="reference"`).

Protocol `reference-3.1` must choose exactly the pages the reference (macrocosm-os/finetuning
3.1.0, `HuggingFaceLoader`) chooses, so this module reproduces its sequence of draws and
requests, made on a private `random.Random(seed)` instead of the global RNG:

- ``/size`` once, one attempt: its splits become a config table in the server's order, one
  entry per config (a config listed with several splits keeps its first position and its last
  split), without the ``default`` config unless it is the only entry. Any failure ends the
  load (the reference then raises an `AttributeError`).
- A *fetch call* for n pages draws one offset ``randint(0, rows_per_page - 1)``; then, until it
  holds n pages: ``choice(configs)``, ``pc = (num_rows - offset + 1) // rows_per_page`` and the
  page ``offset + randint(0, pc - 1) * rows_per_page`` (``pc <= 0`` ends the load). A page this
  call already holds is a duplicate (the 100th ends the call early); otherwise it is requested
  as ``/rows?dataset&config&split&offset&limit`` (``limit`` = rows_per_page, no ``length``: the
  server sends at most 100 rows whatever the limit).
- A failed page is never asked again: the next draw replaces it. 429 waits ``Retry-After``
  (an integer of seconds) or the current back-off; any other failure waits the back-off
  (5 s, doubling to at most 60, back to 5 after a success). The 10th failure of one call ends
  the load; what it was (429, another status, no answer) decides how the validator treats the
  loss (`DataUnavailable.reason`: ``rate_limited``, ``http_error``, ``connection``).
- Reference quirks kept on purpose: no answer to the first request of a call ends the load
  (an `UnboundLocalError` there); a 2xx page whose body is not JSON counts as fetched, with no
  rows, and as a failure; rows are read as the page arrives, so a malformed row ends the load.

Ours in both protocols: every request has a deadline and a body cap (`DataConfig`), and a
``Retry-After`` wait is capped at `DataConfig.max_retry_after_s`.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from finetune.datasets.http import DatasetsServerClient, Reply
from finetune.errors import DataUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], None]
Extract = Callable[[Mapping[str, Any]], T]

FAILURE_LIMIT = 10  # failed requests per fetch call, successes in between or not
FIRST_DELAY_S = 5  # back-off after a failure; doubles, back to this after a success
MAX_DELAY_S = 60
DUPLICATE_LIMIT = 100  # duplicate draws that end a fetch call early


@dataclass(frozen=True)
class Page:
    """One page the reference requests: its config, first row and split."""

    config: str
    offset: int
    split: str

    @property
    def name(self) -> str:
        """The reference's page name (`get_page_names`): ``<config>_<offset>_<split>``."""
        return f"{self.config}_{self.offset}_{self.split}"


class ReferencePager:
    """Draws and fetches pages of one dataset as the reference does, on a private RNG.

    Creating it reads ``/size`` (the reference's constructor does so before any draw).

    Args:
        client: The datasets-server client (its deadline and body cap hold).
        dataset: Hugging Face dataset id.
        rng: The loader's `random.Random(seed)`; every draw is made on it, in order.
        rows_per_page: The reference's ``num_rows_per_page`` (page stride and ``limit``).
        sleep: How to wait between attempts (tests pass a recorder).
        max_wait_s: Cap on a ``Retry-After`` wait.

    Raises:
        DataUnavailable: ``/size`` failed or is not a list of splits.
    """

    def __init__(
        self,
        client: DatasetsServerClient,
        dataset: str,
        rng: random.Random,
        rows_per_page: int,
        *,
        sleep: Sleep,
        max_wait_s: float,
    ) -> None:
        self._client = client
        self._dataset = dataset
        self._rng = rng
        self._rows_per_page = rows_per_page
        self._sleep = sleep
        self._max_wait_s = max_wait_s
        self._table = self._config_table()
        self.pages: tuple[Page, ...] = ()  # the pages of the last fetch call

    def fetch(self, wanted: int, extract: Extract[T]) -> list[T]:
        """One fetch call of the reference: up to `wanted` distinct pages, their rows in order.

        Args:
            wanted: Pages to hold at the end of the call (fewer after 100 duplicate draws).
            extract: Reads what the loader keeps from one row (the ``row`` object of an item);
                raises `DataUnavailable` for a row the reference could not read.

        Returns:
            `extract` of every row of every page fetched, page by page.

        Raises:
            DataUnavailable: A page cannot be drawn, the 10th failure of the call, or a
                failure the reference does not survive (see the module docstring).
        """
        got: list[Page] = []
        entries: list[T] = []
        failures = 0
        duplicates = 0
        delay = FIRST_DELAY_S
        answered = False  # has any request of this call been answered?
        start = self._rng.randint(0, self._rows_per_page - 1)
        while len(got) < wanted:
            page = self._draw(start)
            if page in got:
                duplicates += 1
                if duplicates >= DUPLICATE_LIMIT:
                    logger.info("%s: %d duplicate page draws, stopping", self._dataset, duplicates)
                    break
                continue
            reply = self._client.get_once("/rows", self._params(page))
            if reply.status is None and not answered:
                raise self._lost(f"no answer to the first page request: {reply.failure}")
            answered = True
            if reply.status is not None and reply.status < 400:
                delay = FIRST_DELAY_S
                got.append(page)  # counted before its body is read, as the reference does
                payload = _json(reply.body)
                if payload is not _INVALID:
                    entries.extend(_rows(payload, extract, self._dataset))
                    continue
            failures += 1
            self._sleep(self._wait_or_give_up(reply, failures, delay))
            delay = min(2 * delay, MAX_DELAY_S)
        self.pages = tuple(got)
        return entries

    # -- draws -------------------------------------------------------------------------------

    def _config_table(self) -> dict[Any, tuple[Any, Any]]:
        reply = self._client.get_once("/size", {"dataset": self._dataset})
        if reply.status is None or reply.status >= 400:
            cause = reply.failure or f"HTTP {reply.status}"
            raise self._lost(f"/size failed ({cause}); the reference does not retry it")
        payload = _json(reply.body)
        if payload is _INVALID:
            raise self._lost("/size is not JSON; the reference does not retry it")
        try:
            splits = payload["size"]["splits"]
        except (KeyError, TypeError, IndexError) as exc:
            raise self._lost(f"/size has no size.splits: {exc!r}") from exc
        if not isinstance(splits, list):
            raise self._lost(f"/size splits is a {type(splits).__name__}, not a list")
        table: dict[Any, tuple[Any, Any]] = {}  # config -> (num_rows, split); a dict, like R's
        try:
            for entry in splits:
                if len(splits) > 1 and entry["config"] == "default":
                    continue
                table[entry["config"]] = (entry["num_rows"], entry["split"])
        except (KeyError, TypeError) as exc:  # not an object, a key missing, unhashable config
            raise self._lost(f"/size split entry is malformed: {exc!r}") from exc
        return table

    def _draw(self, start: int) -> Page:
        configs = list(self._table)
        if not configs:
            raise self._lost("/size lists no config to draw from")
        config = self._rng.choice(configs)
        num_rows, split = self._table[config]
        count = _page_count(num_rows, start, self._rows_per_page)
        if count is None:
            raise self._lost(f"config {_short(config)} has no row count: {_short(num_rows)}")
        if count <= 0:  # the reference's randint(0, count - 1) raises
            raise self._lost(
                f"config {_short(config)} has {num_rows} rows: no page of "
                f"{self._rows_per_page} rows from offset {start}"
            )
        offset = start + self._rng.randint(0, count - 1) * self._rows_per_page
        if not isinstance(config, str) or not isinstance(split, str):
            raise self._lost(
                f"config {_short(config)}, split {_short(split)}: names that are not strings "
                "are not reproduced",
                reason="not_reproduced",
            )
        return Page(config, offset, split)

    def _params(self, page: Page) -> dict[str, str]:
        return {
            "dataset": self._dataset,
            "config": page.config,
            "split": page.split,
            "offset": str(page.offset),
            "limit": str(self._rows_per_page),
        }

    # -- failures ----------------------------------------------------------------------------

    def _wait_or_give_up(self, reply: Reply, failures: int, delay: int) -> float:
        """The wait after the `failures`-th failed request of a call; the 10th ends the load."""
        if reply.status == 429:
            wait = self._retry_after(reply.retry_after, delay)
            if failures >= FAILURE_LIMIT:  # the reference sleeps first, then gives up
                self._sleep(wait)
                raise self._lost("rate limit exceeded after 10 failures", reason="rate_limited")
            logger.warning(
                "%s: rate limited; waiting %ss (failure %d/%d)",
                self._dataset, wait, failures, FAILURE_LIMIT,
            )  # fmt: skip
            return wait
        if reply.status is None:
            cause, reason = reply.failure, "connection"
        elif reply.status >= 400:
            cause, reason = f"HTTP {reply.status}", "http_error"
        else:
            cause, reason = "the page is not JSON", None
        if failures >= FAILURE_LIMIT:
            raise self._lost(f"10th failed page request of the call: {cause}", reason=reason)
        logger.warning(
            "%s: page request failed (%s); drawing another page in %ss (failure %d/%d)",
            self._dataset, cause, delay, failures, FAILURE_LIMIT,
        )  # fmt: skip
        return delay

    def _retry_after(self, header: str | None, delay: int) -> float:
        if header is None:
            return delay
        try:
            seconds = int(header)  # the reference's int(): an HTTP date ends the load
        except ValueError as exc:
            raise self._lost(f"Retry-After {_short(header)} is not an integer") from exc
        if seconds < 0:  # time.sleep refuses it, and the reference with it
            raise self._lost(f"Retry-After {seconds} is negative")
        return min(seconds, self._max_wait_s)

    def _lost(self, why: str, *, reason: str | None = None) -> DataUnavailable:
        return DataUnavailable(f"{self._dataset}: {why}", reason=reason, dataset=self._dataset)


_INVALID = object()


def _short(value: Any) -> str:
    """`repr` of a server-given value, bounded for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return _INVALID


def _page_count(num_rows: Any, start: int, rows_per_page: int) -> int | None:
    """``(num_rows - start + 1) // rows_per_page`` with Python's arithmetic, as an int.

    A float row count floors like the reference's (Python 3.11 accepts the integral float it
    gives to `randint`); anything else, or a non-finite float, is None (the reference raises).
    """
    if not isinstance(num_rows, int | float):
        return None
    count = (num_rows - start + 1) // rows_per_page
    if isinstance(count, float):
        if not math.isfinite(count):
            return None
        return int(count)
    return count


def _rows(payload: Any, extract: Extract[T], dataset: str) -> list[T]:
    """`extract` of each item's ``row``; any shape the reference cannot iterate ends the load."""
    try:
        items = payload["rows"]
    except (KeyError, TypeError, IndexError) as exc:
        raise DataUnavailable(f"{dataset}: page has no rows: {exc!r}", dataset=dataset) from exc
    if isinstance(items, dict | str) and not items:
        return []  # iterating an empty object or string yields nothing
    if not isinstance(items, list):
        raise DataUnavailable(f"{dataset}: page rows are not a list", dataset=dataset)
    out: list[T] = []
    for item in items:
        row = item.get("row") if isinstance(item, dict) else None
        if not isinstance(row, dict):
            raise DataUnavailable(f"{dataset}: page item without a row object", dataset=dataset)
        out.append(extract(row))
    return out


__all__ = ["DUPLICATE_LIMIT", "FAILURE_LIMIT", "Page", "ReferencePager"]
