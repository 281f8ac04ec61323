"""The datasets-server client against a loopback server: paging, retries, timeouts, errors."""

from __future__ import annotations

import email.utils
import socket
import time

import pytest

from finetune.datasets.config import DataConfig
from finetune.datasets.http import DatasetsServerClient, _retry_after_s
from finetune.errors import DataUnavailable
from tests.datasets.fake_datasets_server import FakeDatasetsServer

ROWS = [{"text": f"document {i}"} for i in range(250)]


@pytest.fixture
def server():
    with FakeDatasetsServer(
        {"org/docs": {("default", "train"): ROWS, ("extra", "test"): ROWS[:5]}},
        shas={"org/docs": "abc123def"},
        truncated={3},
    ) as srv:
        yield srv


def _client(server: FakeDatasetsServer, **overrides) -> tuple[DatasetsServerClient, list[float]]:
    settings = {"endpoint": server.url, "hub_endpoint": server.url, "backoff_s": 0.01}
    settings.update(overrides)
    sleeps: list[float] = []
    return DatasetsServerClient(DataConfig(**settings), sleep=sleeps.append), sleeps


def test_splits_lists_every_config_and_split(server):
    client, _ = _client(server)
    sizes = {(s.config, s.split): s.num_rows for s in client.splits("org/docs")}
    assert sizes == {("default", "train"): 250, ("extra", "test"): 5}


def test_rows_reads_one_page_and_drops_truncated_rows(server):
    client, _ = _client(server)
    page = client.rows("org/docs", "default", "train", offset=0, length=10)
    assert [r["text"] for r in page.rows] == [f"document {i}" for i in range(10) if i != 3]
    assert page.truncated_skipped == 1
    assert page.num_rows_total == 250
    assert server.requests[-1] == (
        "/rows",
        {
            "dataset": "org/docs",
            "config": "default",
            "split": "train",
            "offset": "0",
            "length": "10",
        },
    )


def test_last_page_may_be_short(server):
    client, _ = _client(server)
    page = client.rows("org/docs", "default", "train", offset=200, length=100)
    assert len(page.rows) == 50


@pytest.mark.parametrize(("offset", "length"), [(0, 0), (0, 101), (-1, 10)])
def test_rows_rejects_bad_page_bounds(server, offset, length):
    client, _ = _client(server)
    with pytest.raises(ValueError):
        client.rows("org/docs", "default", "train", offset=offset, length=length)
    assert server.requests == []


def test_429_with_retry_after_is_honoured_then_succeeds(server):
    client, sleeps = _client(server)
    server.fail_next(429, retry_after="7")
    assert len(client.splits("org/docs")) == 2
    assert sleeps == [7.0]
    assert server.paths() == ["/size", "/size"]


def test_retry_after_is_capped(server):
    client, sleeps = _client(server, max_retry_after_s=2.5)
    server.fail_next(503, retry_after="86400")
    client.splits("org/docs")
    assert sleeps == [2.5]


def test_server_errors_back_off_exponentially(server):
    client, sleeps = _client(server, retries=3, backoff_s=0.01)
    server.fail_next(500, times=2)
    client.splits("org/docs")
    assert sleeps == pytest.approx([0.01, 0.02])
    assert len(server.requests) == 3


def test_persistent_server_errors_give_data_unavailable_after_last_retry(server):
    client, sleeps = _client(server, retries=2)
    server.fail_next(502, times=10)
    with pytest.raises(DataUnavailable, match=r"after 3 attempts: HTTP 502"):
        client.splits("org/docs")
    assert len(server.requests) == 3
    assert len(sleeps) == 2


def test_client_errors_are_not_retried(server):
    client, sleeps = _client(server, retries=3)
    with pytest.raises(DataUnavailable, match="HTTP 404") as info:
        client.splits("no/such-dataset")
    assert info.value.facts["status"] == 404
    assert len(server.requests) == 1
    assert sleeps == []


def test_hanging_server_trips_the_timeout(server):
    client, sleeps = _client(server, timeout_s=0.2, retries=1)
    server.hang_next(5.0, times=2)
    started = time.monotonic()
    with pytest.raises(DataUnavailable, match="timed out"):
        client.splits("org/docs")
    assert time.monotonic() - started < 2.0
    assert len(sleeps) == 1


def test_timeout_then_recovery(server):
    client, _ = _client(server, timeout_s=0.2, retries=1)
    server.hang_next(5.0)
    assert len(client.splits("org/docs")) == 2


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps: list[float] = []
    client = DatasetsServerClient(
        DataConfig(endpoint=f"http://127.0.0.1:{port}", retries=2, backoff_s=0.001),
        sleep=sleeps.append,
    )
    with pytest.raises(DataUnavailable, match="connection failed"):
        client.splits("org/docs")
    assert len(sleeps) == 2


def test_invalid_json_is_reported(server):
    client, _ = _client(server)
    server.garbage_next()
    with pytest.raises(DataUnavailable, match="invalid JSON"):
        client.splits("org/docs")


def test_malformed_payload_is_reported(server):
    client, _ = _client(server)
    server.garbage_next(b'{"size": {}}')
    with pytest.raises(DataUnavailable, match="size.splits"):
        client.splits("org/docs")


def test_current_sha_reads_the_hub_api(server):
    client, _ = _client(server)
    assert client.current_sha("org/docs") == "abc123def"
    assert server.paths() == ["/api/datasets/org/docs"]


def test_retry_after_parsing():
    assert _retry_after_s(None) is None
    assert _retry_after_s("12") == 12.0
    assert _retry_after_s("-5") == 0.0
    assert _retry_after_s("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= _retry_after_s(future) <= 31


def test_rows_that_are_not_objects_are_skipped_not_passed_on(server):
    # A row a shaper cannot `.get` from would escape the ValueError-only skip in the sampler.
    client, _ = _client(server)
    body = (
        b'{"rows": [{"row": null}, {"row": [1, 2]}, {"row": "text"}, {"row": {"text": "ok"}}],'
        b' "num_rows_total": 4}'
    )
    server.garbage_next(body)
    page = client.rows("org/docs", "default", "train", offset=0, length=4)
    assert page.rows == ({"text": "ok"},)


@pytest.mark.parametrize(
    "body",
    [
        b'{"size": {"splits": [{"config": "c", "split": "s", "num_rows": Infinity}]}}',
        b'{"size": {"splits": [{"config": "c", "split": "s", "num_rows": NaN}]}}',
    ],
)
def test_non_finite_sizes_are_data_unavailable(server, body):
    client, _ = _client(server)
    server.garbage_next(body)
    with pytest.raises(DataUnavailable):
        client.splits("org/docs")


def test_non_finite_row_total_is_data_unavailable(server):
    client, _ = _client(server)
    server.garbage_next(b'{"rows": [], "num_rows_total": Infinity}')
    with pytest.raises(DataUnavailable):
        client.rows("org/docs", "default", "train", offset=0, length=4)


def test_deeply_nested_json_is_data_unavailable(server):
    client, _ = _client(server)
    server.garbage_next(b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(DataUnavailable):
        client.splits("org/docs")


def test_oversized_body_is_refused(server, monkeypatch):
    import finetune.datasets.http as http_module

    monkeypatch.setattr(http_module, "MAX_BODY_BYTES", 1000)
    client, sleeps = _client(server, retries=2)
    server.garbage_next(b'{"pad": "' + b"x" * 5000 + b'"}')
    with pytest.raises(DataUnavailable, match="more than 1000 bytes"):
        client.splits("org/docs")
    assert len(server.requests) == 1  # a too-large answer is not retried
    assert sleeps == []
