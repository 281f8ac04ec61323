"""Reference draws reproduce the reference validator's data, case by golden case.

`tests/compat/golden/data/*.json` records what macrocosm-os/finetuning 3.1.0 requested and
which samples it built, for 20 round seeds per server layout (`scripts/compat/golden_data.py`).
Here our loaders run with `REFERENCE_31.data` against the same loopback server contents
(`tests.compat.layouts`), with the options and sample counts of the mainnet task definitions,
and must make the same requests (path and parameters, in order), make the same calls on their
private RNG as the reference made on the global one (count and digest of the whole sequence),
build the same samples, wait the same back-offs, and fail where the reference failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from competitions import tasks
from competitions.schedule import SCHEDULE
from finetune.competition import EvalTaskSpec
from finetune.datasets import DataConfig, load_task_samples, reference_generated, reference_loaders
from finetune.datasets.reference_generated import basic_english_pool
from finetune.errors import DataUnavailable
from finetune.protocol import REFERENCE_31
from tests.compat import layouts
from tests.datasets.fake_datasets_server import FakeDatasetsServer

GOLDEN = Path(__file__).parent / "golden" / "data"
REMOTE = ("synthetic_1_sft", "codeforces_cots", "fineweb")
GENERATED = ("word_sorting", "dyck")
NOT_REPRODUCED = ("synthetic_mmlu", "if_eval_v1", "if_eval_v2")
LONG_STRING = 4096  # the golden files' threshold for storing a string as a digest
EN_BASIC_SHA256 = "b00de5c6438714a6abaa906ec85f063f63c0606f713cbe8728b21c42664e5fce"


@cache
def _golden(dataset: str) -> dict[str, Any]:
    return json.loads((GOLDEN / f"{dataset}.json").read_text("utf-8"))


def _cases(datasets: tuple[str, ...]) -> list[Any]:
    params = []
    for dataset in datasets:
        seen: dict[str, int] = {}
        for case in _golden(dataset)["cases"]:
            layout = case["layout"]["name"]
            seen[layout] = seen.get(layout, -1) + 1
            params.append(pytest.param(case, id=f"{dataset}-{layout}-{seen[layout]:02d}"))
    return params


def _mainnet_task(dataset: str) -> EvalTaskSpec:
    """The task of the mainnet schedule that reads `dataset`.

    Dyck is in no schedule, the reference's included: its builder, with the 100 samples of
    the reference's `DyckLoader`.
    """
    for entry in reversed(SCHEDULE.entries):
        for share in entry.competitions:
            for task in share.competition.tasks:
                if task.dataset == dataset:
                    return task
    assert dataset == "dyck", f"no mainnet task reads {dataset}"
    return tasks.dyck_language(1.0, samples=100)


def _reason_of(error: str) -> str:
    """Our reason code for an exception of the reference's loader, by what its validator does:
    a 429 HTTPError skips the task, another HTTPError aborts the step, a connection error or
    anything else (ValueError, AttributeError, KeyError ...) skips the task."""
    kind = error.split(":", 1)[0]
    if kind == "HTTPError":
        return "rate_limited" if "Rate limit" in error else "http_error"
    return "connection" if kind == "ConnectionError" else "data_unavailable"


# -- samples as the golden files write them ----------------------------------------------------


def _as_golden(dataset: str, sample: Any) -> dict[str, Any]:
    if dataset == "fineweb":
        return {"text": sample.text}
    record = {"prompt": sample.prompt, "reference": sample.reference}
    if dataset == "synthetic_1_sft":
        # The reference text carries the task type: code ends with its output object.
        code = re.search(r' \{"output": "[^\n]*"\}\Z', sample.reference)
        record["task_type"] = "code_output_prediction" if code else "verifiable_math"
    return record


def _digest(samples: list[dict[str, Any]]) -> str:
    text = json.dumps(samples, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _shorten(value: Any) -> Any:
    if isinstance(value, str) and len(value) > LONG_STRING:
        digest = hashlib.sha256(value.encode()).hexdigest()
        return {"$long": {"len": len(value), "sha256": digest, "head": value[:120], "tail": value[-60:]}}
    if isinstance(value, list):
        return [_shorten(v) for v in value]
    if isinstance(value, dict):
        return {k: _shorten(v) for k, v in value.items()}
    return value


def _assert_samples(case: dict[str, Any], samples: list[Any]) -> None:
    dataset = case["dataset"]
    records = [_as_golden(dataset, s) for s in samples]
    assert len(records) == case["num_samples"]
    listed = case["samples"]
    mine = _shorten(records if case["samples_complete"] else records[: len(listed)])
    assert mine == listed
    assert _digest(records) == case["samples_sha256"]
    if dataset != "fineweb":
        assert {s.system for s in samples} <= {case["system"]}
        assert not any(s.drop_if_longer for s in samples)  # the reference never drops at scoring


# -- the RNG calls, as the golden files trace the reference's global RNG ----------------------


class _TracingRandom(random.Random):
    """Records its public draws like the generator's `RngTrace`: [name, args..., result];
    choice and sample give the population size, sample its result only when k <= 25. Calls
    made inside another traced call (randint -> randrange) are not recorded, as there."""

    calls: list[list[Any]]

    def __init__(self, seed: Any) -> None:
        self._depth = 0
        super().__init__(seed)  # calls self.seed(seed): recorded, like random.seed(seed)

    def _record(self, entry: list[Any]) -> None:
        if self._depth == 0:
            self.calls.append(entry)

    def seed(self, a: Any = None, version: int = 2) -> None:
        super().seed(a, version)
        self._record(["seed", a])

    def randint(self, a: int, b: int) -> int:
        self._depth += 1
        try:
            result = super().randint(a, b)
        finally:
            self._depth -= 1
        self._record(["randint", a, b, result])
        return result

    def randrange(self, *args: Any, **kwargs: Any) -> int:
        result = super().randrange(*args, **kwargs)
        self._record(["randrange", *args, result])
        return result

    def choice(self, seq: Any) -> Any:
        result = super().choice(seq)
        shown = list(result) if isinstance(result, tuple) else result
        self._record(["choice", len(seq), shown])
        return result

    def sample(self, population: Any, k: int, *, counts: Any = None) -> list[Any]:
        result = super().sample(population, k, counts=counts)
        self._record(["sample", len(population), k, list(result) if k <= 25 else None])
        return result

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the reference's loaders make no such call")

    # (Not `random`: a subclass overriding it makes Random draw integers another way.)
    shuffle = choices = _refuse  # type: ignore[assignment]


@pytest.fixture
def rng_calls(monkeypatch) -> list[list[Any]]:
    """Every loader RNG made during the test records into the returned list."""
    calls: list[list[Any]] = []
    tracing = type("Tracing", (_TracingRandom,), {"calls": calls})
    monkeypatch.setattr(reference_loaders, "Random", tracing)
    monkeypatch.setattr(reference_generated, "Random", tracing)
    return calls


def _assert_rng(case: dict[str, Any], calls: list[list[Any]]) -> None:
    golden = case["rng"]
    assert calls[: len(golden["calls"])] == golden["calls"]
    assert len(calls) == golden["total"]
    text = json.dumps(calls, ensure_ascii=False, separators=(",", ":"))
    assert hashlib.sha256(text.encode()).hexdigest() == golden["sha256"]


# -- one server per layout -------------------------------------------------------------------


class _Servers:
    """Started on first use, one per layout, shut down with the module."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self._running: dict[str, tuple[FakeDatasetsServer, layouts.Layout]] = {}

    def ready(self, case: dict[str, Any]) -> tuple[FakeDatasetsServer, layouts.Layout]:
        name = case["layout"]["name"]
        if name not in self._running:
            layout = layouts.build(case["layout"]["params"])
            server = FakeDatasetsServer(
                layout.datasets, rate_limit_offsets=dict(layout.rate_limit_offsets)
            )
            self._running[name] = (self._stack.enter_context(server), layout)
        server, layout = self._running[name]
        server.reset()
        queued = 0  # the layout's faults hit the k-th request of the run, as in the generator
        for index, status, retry_after in sorted(layout.faults):
            if index > queued:
                server.pass_next(times=index - queued)
            server.fail_next(status, retry_after=retry_after)
            queued = index + 1
        return server, layout


@pytest.fixture(scope="module")
def servers() -> Iterator[_Servers]:
    with contextlib.ExitStack() as stack:
        yield _Servers(stack)


# -- the cases --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases(REMOTE))
def test_remote_case_matches_the_reference(case, servers, rng_calls):
    server, _ = servers.ready(case)
    task = _mainnet_task(case["dataset"])
    sleeps: list[float] = []
    error: DataUnavailable | None = None
    samples: list[Any] = []
    try:
        samples = load_task_samples(
            case["dataset"],
            seed=case["seed"],
            count=task.samples,
            options=task.dataset_options,
            config=DataConfig(endpoint=server.url, hub_endpoint=server.url),
            rules=REFERENCE_31.data,
            sleep=sleeps.append,
        )
    except DataUnavailable as exc:
        error = exc
    requests = [(path, list(query.items())) for path, query in server.requests]
    assert requests == [(r["path"], list(r["params"].items())) for r in case["requests"]]
    assert sleeps == case["notes"]["sleeps"]
    _assert_rng(case, rng_calls)
    expected_error = case["notes"].get("error")
    if expected_error is None:
        assert error is None, f"the reference succeeded, we raised {error}"
        _assert_samples(case, samples)
    else:
        assert error is not None, f"the reference raised {expected_error}"
        assert error.reason == _reason_of(expected_error)


@pytest.mark.parametrize("case", _cases(GENERATED))
def test_generated_case_matches_the_reference(case, rng_calls):
    task = _mainnet_task(case["dataset"])
    samples = load_task_samples(
        case["dataset"],
        seed=case["seed"],
        count=task.samples,
        options=task.dataset_options,
        config=DataConfig(offline=True),
        rules=REFERENCE_31.data,
    )
    assert case["requests"] == [] and "error" not in case["notes"]
    _assert_rng(case, rng_calls)
    _assert_samples(case, samples)


def test_word_pool_is_the_references():
    notes = _golden("word_sorting")["cases"][0]["notes"]
    pool = list(basic_english_pool())
    assert len(pool) == notes["word_pool_size"] == 832
    digest = hashlib.sha256(json.dumps(pool, separators=(",", ":")).encode()).hexdigest()
    assert digest == notes["word_pool_sha256"]
    bundled = resources.files("finetune.datasets").joinpath("data/en-basic").read_bytes()
    assert hashlib.sha256(bundled).hexdigest() == EN_BASIC_SHA256  # fact sheet §12


@pytest.mark.parametrize("dataset", REMOTE + GENERATED)
def test_mainnet_task_parameters_are_the_references(dataset):
    """The task definitions carry the reference's loader arguments (its dataset_kwargs, else
    its loader's defaults) as options and sample counts."""
    kwargs = _golden(dataset)["cases"][0]["notes"]["dataset_kwargs"]
    task = _mainnet_task(dataset)
    options = task.dataset_options
    if dataset in REMOTE:
        assert options["rows_per_page"] == kwargs.get("num_rows_per_page", 100)
        assert options["pages"] == kwargs.get("num_pages", 4)
    expected_samples = {
        "synthetic_1_sft": kwargs.get("target_size"),
        "codeforces_cots": 100,  # no target: one page of at most 100 rows, every kept row
        "fineweb": 400,  # no target: 4 pages of at most 100 rows, every row
        "word_sorting": 400,  # WordSortingLoader's default
        "dyck": 100,  # DyckLoader's default
    }[dataset]
    assert task.samples == expected_samples
    if dataset == "codeforces_cots":
        assert options["max_estimated_tokens"] == 16_384  # its max_sequence_length default


@pytest.mark.parametrize("dataset", NOT_REPRODUCED)
def test_unreproduced_data_sets_say_so(dataset):
    # Their golden cases stay unused until these are reproduced (docs/compatibility.md).
    assert _golden(dataset)["cases"]
    with pytest.raises(DataUnavailable, match="not reproduced") as info:
        load_task_samples(
            dataset, seed=1, count=5, config=DataConfig(offline=True), rules=REFERENCE_31.data
        )
    assert info.value.reason == "not_reproduced"
