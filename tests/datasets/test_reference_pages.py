"""The reference's page draws against the loopback server: config table, page arithmetic,
request parameters, redraws after failures, back-off, the 10-failure limit and its quirks.

The golden cases (tests/compat/test_golden_data.py) pin the normal paths on the reference's own
output; these cover the failure paths the golden layouts do not reach.
"""

from __future__ import annotations

import random

import pytest

from finetune.datasets.config import DataConfig
from finetune.datasets.http import DatasetsServerClient
from finetune.datasets.reference_pages import ReferencePager
from finetune.errors import DataUnavailable
from tests.datasets.fake_datasets_server import FakeDatasetsServer

NAME = "org/data"
ROWS = [{"text": f"row {i}"} for i in range(1000)]


def _text(row):
    return row["text"]


@pytest.fixture
def server():
    tables = {("default", "train"): ROWS, ("a", "train"): ROWS[:500], ("b", "train"): ROWS}
    datasets = {
        NAME: tables,
        "org/one": {("default", "train"): ROWS},
        "org/small": {("default", "train"): ROWS[:199]},
    }
    with FakeDatasetsServer(datasets) as srv:
        yield srv


def _pager(server, *, seed=7, rows_per_page=100, dataset=NAME, **config):
    sleeps: list[float] = []
    settings = {"endpoint": server.url, **config}
    client = DatasetsServerClient(DataConfig(**settings), sleep=sleeps.append)
    pager = ReferencePager(
        client,
        dataset,
        random.Random(seed),
        rows_per_page,
        sleep=sleeps.append,
        max_wait_s=DataConfig(**settings).max_retry_after_s,
    )
    return pager, sleeps


def _expected_draws(seed, table, rows_per_page, pages):
    """The reference's draws, written out plainly for a table without failures."""
    rng = random.Random(seed)
    start = rng.randint(0, rows_per_page - 1)
    drawn = []
    while len(drawn) < pages:
        config = rng.choice(list(table))
        count = (table[config] - start + 1) // rows_per_page
        page = (config, start + rng.randint(0, count - 1) * rows_per_page)
        if page not in drawn:
            drawn.append(page)
    return drawn


def test_pages_follow_the_references_draws_and_parameters(server):
    pager, sleeps = _pager(server, rows_per_page=150)
    rows = pager.fetch(3, _text)
    expected = _expected_draws(7, {"a": 500, "b": 1000}, 150, 3)  # "default" left out
    assert [(p.config, p.offset) for p in pager.pages] == expected
    assert server.requests[0] == ("/size", {"dataset": NAME})
    for (path, query), (config, offset) in zip(server.requests[1:], expected, strict=True):
        assert path == "/rows"
        assert list(query.items()) == [
            ("dataset", NAME),
            ("config", config),
            ("split", "train"),
            ("offset", str(offset)),
            ("limit", "150"),  # the stride, ignored by the server; no `length`
        ]
    # the server sends 100 rows whatever the limit, so rows overlap or leave gaps
    first = expected[0][1]
    assert rows[:100] == [f"row {i}" for i in range(first, min(first + 100, 1000))]
    assert sleeps == []


def test_only_default_is_used_when_it_is_the_only_config(server):
    pager, _ = _pager(server, dataset="org/one")
    pager.fetch(2, _text)
    assert {p.config for p in pager.pages} == {"default"}


def test_a_config_with_several_splits_keeps_its_place_and_its_last_split(server):
    server.garbage_next(
        b'{"size": {"splits": ['
        b'{"config": "x", "split": "train", "num_rows": 900},'
        b'{"config": "default", "split": "train"},'
        b'{"config": "x", "split": "test", "num_rows": 300}]}}'
    )
    server.datasets[NAME][("x", "test")] = ROWS[:300]
    pager, _ = _pager(server)
    pager.fetch(2, _text)
    # x/test with num_rows 300 from the last entry; the default entry was never read
    assert {(p.config, p.split) for p in pager.pages} == {("x", "test")}
    assert all(p.offset < 300 - 99 for p in pager.pages)


def test_no_full_page_left_ends_the_load(server):
    pager, _ = _pager(server, rows_per_page=600, seed=3)
    # a: (500 - start + 1) // 600 = 0 pages; b always has one
    with pytest.raises(DataUnavailable, match="no page of 600"):
        for _ in range(20):
            pager.fetch(1, _text)


def test_duplicate_draws_end_a_call_early(server):
    # 199 rows: (200 - start) // 100 is 2 pages for start 0, else 1; three are wanted
    for seed in range(10):
        server.reset()
        pager, _ = _pager(server, seed=seed, dataset="org/small")
        pager.fetch(3, _text)
        assert 1 <= len(pager.pages) <= 2
        assert server.paths() == ["/size"] + ["/rows"] * len(pager.pages)


def test_failed_pages_are_redrawn_with_the_references_back_off(server):
    pager, sleeps = _pager(server)  # /size is read: faults hit the page requests
    server.fail_next(500, times=6)
    server.pass_next()  # a success resets the delay, not the count
    server.fail_next(503, times=3)
    pager.fetch(2, _text)
    assert sleeps == [5, 10, 20, 40, 60, 60, 5, 10, 20]
    rows = [q for p, q in server.requests if p == "/rows"]
    assert len(rows) == 11  # each failure drew a new page
    assert len(pager.pages) == 2


def test_the_tenth_failure_of_a_call_ends_the_load(server):
    pager, sleeps = _pager(server)
    server.fail_next(502, times=4)
    server.pass_next()
    server.fail_next(404, times=6)  # other 4xx count like 5xx
    with pytest.raises(DataUnavailable, match="10th failed page request") as info:
        pager.fetch(5, _text)
    assert info.value.reason == "http_error"  # the reference's validator aborts the step
    assert len(sleeps) == 9  # no wait after the last one


def test_rate_limits_wait_retry_after_or_the_back_off_and_give_up_after_the_tenth(server):
    pager, sleeps = _pager(server)
    server.fail_next(429, retry_after="7")
    server.fail_next(429, times=8)
    server.fail_next(429, retry_after="3")
    with pytest.raises(DataUnavailable, match="rate limit") as info:
        pager.fetch(1, _text)
    assert info.value.reason == "rate_limited"  # the reference's validator skips the task
    # Retry-After 7 does not stop the back-off doubling; the 10th wait happens, then it stops.
    assert sleeps == [7, 10, 20, 40, 60, 60, 60, 60, 60, 3]


def test_retry_after_is_capped_and_must_be_an_integer(server):
    pager, sleeps = _pager(server, max_retry_after_s=30)
    server.fail_next(429, retry_after="3600")
    pager.fetch(1, _text)
    assert sleeps == [30]
    for header in ("1.5", "Wed, 21 Oct 2015 07:28:00 GMT", "-1"):
        server.reset()
        pager, _ = _pager(server)
        server.fail_next(429, retry_after=header)
        with pytest.raises(DataUnavailable, match="Retry-After"):
            pager.fetch(1, _text)


def test_no_answer_to_the_first_request_of_a_call_ends_the_load(server):
    pager, sleeps = _pager(server, timeout_s=0.2)
    server.hang_next(3.0)
    with pytest.raises(DataUnavailable, match="no answer to the first page request"):
        pager.fetch(1, _text)
    assert sleeps == []


def test_no_answer_later_in_a_call_is_a_failure_like_any_other(server):
    pager, sleeps = _pager(server, timeout_s=0.2)
    server.pass_next()  # the first page
    server.hang_next(3.0)
    pager.fetch(2, _text)
    assert sleeps == [5]
    assert len(pager.pages) == 2


def test_a_page_that_is_not_json_counts_as_fetched_and_failed(server):
    pager, sleeps = _pager(server)
    server.garbage_next()
    rows = pager.fetch(2, _text)
    # the broken page brought no rows; a last page may hold 99 (the reference's arithmetic)
    assert len(pager.pages) == 2 and len(rows) in (99, 100)
    assert sleeps == [5]


@pytest.mark.parametrize(
    "body",
    [
        b'{"no_rows": []}',
        b'{"rows": [{"row_idx": 0}]}',
        b'{"rows": [{"row": [1]}]}',
        b'{"rows": 5}',
        b'{"rows": "abc"}',
    ],
)
def test_a_page_the_reference_cannot_read_ends_the_load(server, body):
    pager, _ = _pager(server)
    server.garbage_next(body)
    with pytest.raises(DataUnavailable):
        pager.fetch(1, _text)


def test_an_empty_rows_object_is_a_page_without_rows(server):
    pager, _ = _pager(server)
    server.garbage_next(b'{"rows": {}}')
    assert pager.fetch(1, _text) == []


@pytest.mark.parametrize(
    "fault",
    [
        (500, None),
        (429, "1"),
        (None, b"{not json"),
        (None, b'{"size": {}}'),
        (None, b'{"size": {"splits": {"a": 1}}}'),
        (None, b'{"size": {"splits": [{"config": "a"}]}}'),
        (None, b'{"size": {"splits": [{"config": ["a"], "split": "t", "num_rows": 1}, {}]}}'),
    ],
)
def test_size_is_asked_once_and_any_failure_ends_the_load(server, fault):
    status, body = fault
    if status:
        server.fail_next(status, retry_after=body)
    else:
        server.garbage_next(body)
    with pytest.raises(DataUnavailable):
        _pager(server)
    assert server.paths() == ["/size"]


def test_row_counts_that_are_not_numbers_end_the_load_when_drawn(server):
    server.garbage_next(
        b'{"size": {"splits": [{"config": "a", "split": "train", "num_rows": "many"}]}}'
    )
    pager, _ = _pager(server)
    with pytest.raises(DataUnavailable, match="no row count: 'many'"):
        pager.fetch(1, _text)


@pytest.mark.parametrize("seed", range(5))
def test_float_row_counts_floor_like_the_reference(server, seed):
    offsets = []
    for rows in (b"499.9", b"499"):
        server.reset()
        server.garbage_next(
            b'{"size": {"splits": [{"config": "a", "split": "train", "num_rows": %s}]}}' % rows
        )
        pager, _ = _pager(server, seed=seed)
        pager.fetch(3, _text)
        offsets.append([p.offset for p in pager.pages])
    assert offsets[0] == offsets[1]
