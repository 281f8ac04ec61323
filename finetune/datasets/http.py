"""A small client for the Hugging Face datasets-server (``/size`` and ``/rows``).

Every call has a deadline and a cap on the body it reads. `splits` and `rows` retry transient
failures (timeouts, connection errors, 429 and 5xx) with exponential back-off, honour a
``Retry-After`` header (capped), and after the last attempt the caller gets `DataUnavailable`
with the reason; other 4xx answers are not retried: asking again will not change them.
`get_once` makes exactly one attempt and returns the answer uninterpreted, for callers that
decide themselves what a failure means (the reference's page draws redraw a page instead of
asking again, `finetune.datasets.reference_pages`).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from finetune.datasets.config import DataConfig
from finetune.errors import DataUnavailable

logger = logging.getLogger(__name__)

MAX_PAGE_ROWS = 100  # the rows API refuses longer pages
# A page of 100 rows is a few MiB at most (the server truncates long cells); anything far
# larger is refused rather than held in memory.
MAX_BODY_BYTES = 64 * 1024 * 1024
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_CHUNK = 64 * 1024
_USER_AGENT = "finetune-subnet-validator"


@dataclass(frozen=True)
class SplitSize:
    """One (config, split) of a dataset and its row count, from ``/size``."""

    config: str
    split: str
    num_rows: int


@dataclass(frozen=True)
class RowsPage:
    """One page from ``/rows``. Rows whose cells the server truncated are left out."""

    offset: int
    rows: tuple[Mapping[str, Any], ...]
    num_rows_total: int
    truncated_skipped: int = 0


@dataclass(frozen=True)
class Reply:
    """The outcome of one GET, uninterpreted.

    Attributes:
        status: The HTTP status, or None when no answer came (timeout, connection failure).
        body: The body; for an error status its first 2000 bytes.
        retry_after: The raw ``Retry-After`` header of an error answer, if it had one.
        failure: Why no answer came, when `status` is None.
    """

    status: int | None
    body: bytes = b""
    retry_after: str | None = None
    failure: str = ""


class _Retryable(Exception):
    def __init__(self, reason: str, delay_s: float | None = None) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


class DatasetsServerClient:
    """Reads dataset sizes and pages of rows.

    Args:
        config: Endpoints, timeout, retry count and back-off.
        sleep: How to wait between attempts (tests pass a recorder).
    """

    def __init__(self, config: DataConfig, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self._config = config
        self._sleep = sleep

    def splits(self, dataset: str) -> list[SplitSize]:
        """Every (config, split) of `dataset` with its row count.

        Raises:
            DataUnavailable: The server could not be reached or answered nonsense.
        """
        payload = self._get_json(self._config.endpoint, "/size", {"dataset": dataset})
        try:
            entries = payload["size"]["splits"]
            return [
                SplitSize(str(e["config"]), str(e["split"]), int(e["num_rows"])) for e in entries
            ]
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # int(Infinity)
            raise DataUnavailable(
                f"/size for {dataset} has no size.splits list: {exc!r}", dataset=dataset
            ) from exc

    def rows(
        self, dataset: str, config: str, split: str, *, offset: int, length: int = MAX_PAGE_ROWS
    ) -> RowsPage:
        """One page of rows starting at `offset` (at most 100 rows).

        Raises:
            ValueError: `length` is outside 1..100 or `offset` is negative.
            DataUnavailable: The server could not be reached or answered nonsense.
        """
        if not 1 <= length <= MAX_PAGE_ROWS or offset < 0:
            raise ValueError(f"need 0 <= offset and 1 <= length <= 100, got {offset=} {length=}")
        params = {
            "dataset": dataset,
            "config": config,
            "split": split,
            "offset": str(offset),
            "length": str(length),
        }
        payload = self._get_json(self._config.endpoint, "/rows", params)
        try:
            items = list(payload["rows"])
            # A row that is not an object would reach the shapers, which read rows with .get.
            wellformed = [i for i in items if isinstance(i, dict) and isinstance(i.get("row"), dict)]
            kept = tuple(item["row"] for item in wellformed if not item.get("truncated_cells"))
            total = int(payload.get("num_rows_total", 0))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise DataUnavailable(
                f"/rows for {dataset} at offset {offset} is malformed: {exc!r}", dataset=dataset
            ) from exc
        malformed = len(items) - len(wellformed)
        skipped = len(wellformed) - len(kept)
        if malformed:
            logger.warning(
                "%s offset %d: skipped %d rows that are not objects", dataset, offset, malformed
            )
        if skipped:
            logger.info(
                "%s offset %d: skipped %d rows with truncated cells", dataset, offset, skipped
            )
        return RowsPage(offset, kept, total, skipped)

    def current_sha(self, dataset: str) -> str:
        """The commit sha the Hub serves for `dataset` now (used to check a pinned revision).

        Raises:
            DataUnavailable: The Hub could not be reached or gave no sha.
        """
        quoted = urllib.parse.quote(dataset, safe="/")
        payload = self._get_json(self._config.hub_endpoint, f"/api/datasets/{quoted}", {})
        sha = payload.get("sha") if isinstance(payload, dict) else None
        if not isinstance(sha, str) or not sha:
            raise DataUnavailable(f"the Hub gave no sha for dataset {dataset}", dataset=dataset)
        return sha

    def get_once(self, path: str, params: Mapping[str, str]) -> Reply:
        """One GET of ``<endpoint><path>?<params>`` (in the order given), without retries.

        Args:
            path: ``/size`` or ``/rows``.
            params: Query parameters, sent in this order.

        Returns:
            The answer, whatever its status, or a `Reply` without status when none came
            within the deadline or the connection failed.

        Raises:
            DataUnavailable: The body exceeds `MAX_BODY_BYTES` (refused, never read whole).
        """
        query = urllib.parse.urlencode(params)
        url = f"{self._config.endpoint.rstrip('/')}{path}" + (f"?{query}" if query else "")
        return self._exchange(url)

    # -- transport -------------------------------------------------------------------------

    def _get_json(self, base: str, path: str, params: Mapping[str, str]) -> Any:
        query = urllib.parse.urlencode(params)
        url = f"{base.rstrip('/')}{path}" + (f"?{query}" if query else "")
        attempts = self._config.retries + 1
        last = "no attempt made"
        for attempt in range(attempts):
            try:
                return self._get_once(url)
            except _Retryable as exc:
                last = str(exc)
                if attempt + 1 == attempts:
                    break
                delay = exc.delay_s
                if delay is None:
                    delay = self._config.backoff_s * 2**attempt
                delay = min(delay, self._config.max_retry_after_s)
                logger.warning(
                    "GET %s failed (%s); attempt %d/%d, retrying in %.2fs",
                    url,
                    last,
                    attempt + 1,
                    attempts,
                    delay,
                )
                self._sleep(delay)
        raise DataUnavailable(
            f"GET {url} failed after {attempts} attempts: {last}", url=url, attempts=attempts
        )

    def _get_once(self, url: str) -> Any:
        reply = self._exchange(url)
        if reply.status is None:
            raise _Retryable(reply.failure)
        if reply.status >= 400:
            detail = reply.body.decode("utf-8", "replace").strip()
            reason = f"HTTP {reply.status}" + (f": {detail}" if detail else "")
            if reply.status in _RETRY_STATUSES:
                raise _Retryable(reason, _retry_after_s(reply.retry_after))
            raise DataUnavailable(f"GET {url} refused: {reason}", url=url, status=reply.status)
        try:
            return json.loads(reply.body)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
            raise DataUnavailable(f"GET {url} returned invalid JSON: {exc}", url=url) from exc

    def _exchange(self, url: str) -> Reply:
        """One GET with the deadline and the body cap; every transport failure is a `Reply`."""
        request = urllib.request.Request(
            url, headers={"User-Agent": _USER_AGENT, "Accept": "application/json"}
        )
        deadline = time.monotonic() + self._config.timeout_s
        timed_out = f"timed out after {self._config.timeout_s}s"
        try:
            with urllib.request.urlopen(request, timeout=self._config.timeout_s) as response:
                body = _read_before(response, deadline, self._config.timeout_s)
                return Reply(status=response.status, body=body)
        except urllib.error.HTTPError as exc:
            return Reply(
                status=exc.code, body=_error_body(exc), retry_after=exc.headers.get("Retry-After")
            )
        except TimeoutError:
            return Reply(status=None, failure=timed_out)
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                return Reply(status=None, failure=timed_out)
            return Reply(status=None, failure=f"connection failed: {exc.reason}")
        except (OSError, http.client.HTTPException) as exc:
            return Reply(status=None, failure=f"connection failed: {exc!r}")


def _read_before(response: Any, deadline: float, timeout_s: float) -> bytes:
    # urllib's timeout bounds each socket read, not the whole body; a server that trickles
    # bytes could otherwise hold us far past the deadline.
    chunks = []
    size = 0
    while chunk := response.read(_CHUNK):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            # Not retried: the same request would get the same answer.
            raise DataUnavailable(
                f"GET {response.geturl()} answered more than {MAX_BODY_BYTES} bytes; refused",
                url=response.geturl(),
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"body not received within {timeout_s}s")
    return b"".join(chunks)


def _error_body(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read(2000)
    except OSError:
        return b""


def _retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


__all__ = ["MAX_PAGE_ROWS", "DatasetsServerClient", "Reply", "RowsPage", "SplitSize"]
