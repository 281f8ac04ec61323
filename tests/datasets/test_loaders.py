"""Row shapers on plain dicts; offline, local-file and remote loading through the registry."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finetune.datasets import (
    DataConfig,
    ExactAnswerSample,
    MultipleChoiceSample,
    ReferenceSample,
    TextSample,
    load_task_samples,
)
from finetune.datasets.local_files import read_rows
from finetune.datasets.shapers import (
    MMLU_EXAMPLE_PREFIX,
    REASONING_SYSTEM_PROMPT,
    format_number,
    mcq_to_qa,
    shape_boolq,
    shape_codeforces,
    shape_fineweb,
    shape_mawps,
    shape_mmlu,
    shape_synthetic_1,
)
from finetune.errors import DataUnavailable
from tests.datasets.fake_datasets_server import FakeDatasetsServer

MCQ = "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22"


def _chat(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


# -- shapers --------------------------------------------------------------------------------


def test_shape_mmlu_reads_the_subnet_layout():
    sample = shape_mmlu({"challenge": MCQ, "reference": " b "})
    assert sample == MultipleChoiceSample(question=MCQ, answer="B")


def test_shape_mmlu_formats_the_choice_list_layout():
    row = {"question": "What is 2 + 2?", "choices": ["3", "4", "5", "22"], "answer": 1}
    assert shape_mmlu(row) == MultipleChoiceSample(question=MCQ, answer="B")


def test_shape_mmlu_prefix_and_qa_round_trip():
    sample = shape_mmlu({"question": MCQ, "answer": "D"}, example_prefix=MMLU_EXAMPLE_PREFIX)
    assert sample.question.startswith(MMLU_EXAMPLE_PREFIX)
    assert mcq_to_qa(sample) == ("What is 2 + 2?", "22")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"challenge": MCQ, "reference": "E"}, "not one of A-D"),
        ({"challenge": "What is 2 + 2?\nA. 3\nB. 4", "reference": "A"}, "lacks options"),
        ({"reference": "A"}, "no non-empty text"),
        ({"question": "q", "choices": ["a", "b"], "answer": 0}, "four non-empty choices"),
        ({"question": "q", "choices": ["a", "b", "c", "d"], "answer": 4}, "not in 0..3"),
        ({"question": "q", "choices": ["a", "b", "c", "d"], "answer": True}, "not in 0..3"),
    ],
)
def test_shape_mmlu_rejects_malformed_rows(row, reason):
    with pytest.raises(ValueError, match=reason):
        shape_mmlu(row)


def test_shape_fineweb_truncates_by_characters():
    assert shape_fineweb({"text": "  abcdef  "}, max_chars=4) == TextSample("abcd")
    assert shape_fineweb({"text": "abcdef"}) == TextSample("abcdef")
    with pytest.raises(ValueError):
        shape_fineweb({"text": "   "})
    with pytest.raises(ValueError):
        shape_fineweb({"text": 5})


def test_shape_synthetic_1_math_keeps_trace_and_boxed_answer_line():
    assistant = (
        "<think>\n1+1 is 2, so 2/4.\n</think>\n\nSo $\\boxed{\\frac{1}{2}}$.\nHope it helps!"
    )
    row = {"task_type": "verifiable_math", "messages": _chat("Compute.", assistant)}
    sample = shape_synthetic_1(row)
    assert sample == ReferenceSample(
        prompt="Compute.",
        reference="<think>\n1+1 is 2, so 2/4.\n</think>\n\nSo $\\boxed{\\frac{1}{2}}$.",
        system=REASONING_SYSTEM_PROMPT,
    )


def test_shape_synthetic_1_code_output_and_json_encoded_messages():
    assistant = '<think>\nprints 6\n</think>\n```json\n{"output": "6"}\n```'
    row = {"task_type": "code_output_prediction", "messages": json.dumps(_chat("Q", assistant))}
    assert (
        shape_synthetic_1(row).reference == '<think>\nprints 6\n</think>\n```json\n{"output": "6"}'
    )


@pytest.mark.parametrize(
    ("task_type", "assistant", "reason"),
    [
        ("verifiable_math", "<think>x</think> the answer is 4", "no \\\\boxed"),
        ("verifiable_math", "<think>x</think> \\boxed{4", "unbalanced"),
        ("verifiable_math", "<think>x</think> \\boxed{}", "empty"),
        ("verifiable_math", "<think>\\boxed{4}</think> four", "not after </think>"),
        ("code_output_prediction", '<think>x</think> {"output": oops}', "not valid JSON"),
        ("code_output_prediction", "<think>x</think> 6", 'no {"output"'),
        ("code_generation", "<think>x</think> \\boxed{4}", "task_type"),
    ],
)
def test_shape_synthetic_1_rejects_rows_without_a_usable_answer(task_type, assistant, reason):
    row = {"task_type": task_type, "messages": _chat("Q", assistant)}
    with pytest.raises(ValueError, match=reason):
        shape_synthetic_1(row)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "Q"}],
        [{"role": "assistant", "content": "A"}, {"role": "user", "content": "Q"}],
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": " "}],
        "not json",
        None,
    ],
)
def test_two_message_shapers_reject_bad_conversations(messages):
    with pytest.raises(ValueError):
        shape_codeforces({"messages": messages})


def test_absurdly_nested_json_in_a_row_is_a_skipped_row_not_a_crash():
    # RecursionError is not a ValueError: it would escape the sampler's skip and the loader.
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ValueError):
        shape_codeforces({"messages": deep})
    assistant = '<think>x</think> {"output": ' + deep + "}"
    row = {"task_type": "code_output_prediction", "messages": _chat("Q", assistant)}
    with pytest.raises(ValueError):
        shape_synthetic_1(row)


def test_shape_codeforces_uses_the_trace_as_reference_and_drops_long_rows():
    row = {"messages": _chat("Problem", "<think>idea</think>\ncode")}
    assert shape_codeforces(row) == ReferenceSample(
        "Problem", "<think>idea</think>\ncode", REASONING_SYSTEM_PROMPT, drop_if_longer=True
    )
    with pytest.raises(ValueError, match="longer than"):
        shape_codeforces(row, max_chars=10)


def test_shape_boolq():
    row = {"question": "is water wet", "passage": "Water is wet.", "answer": True}
    assert shape_boolq(row) == ExactAnswerSample(
        prompt="Is water wet?", answers=("yes",), kind="text", context="Water is wet."
    )
    assert shape_boolq({**row, "answer": "false"}).answers == ("no",)
    with pytest.raises(ValueError, match="boolean"):
        shape_boolq({**row, "answer": 1})
    with pytest.raises(ValueError):
        shape_boolq({"question": "is it", "answer": True})


def test_shape_mawps():
    sample = shape_mawps({"question": "3 + 4?", "result": "7", "result_float": 7.0})
    assert sample == ExactAnswerSample(prompt="3 + 4?", answers=("7",), kind="number")
    assert shape_mawps({"question": "q", "result": "1,250"}).answers == ("1250",)
    assert shape_mawps({"question": "q", "result": "x", "answer": 2.5}).answers == ("2.5",)
    with pytest.raises(ValueError, match="numeric"):
        shape_mawps({"question": "q", "result": "seven"})
    with pytest.raises(ValueError, match="numeric"):
        shape_mawps({"question": "q", "result": "nan"})


def test_format_number():
    assert [format_number(x) for x in (3.0, -2.0, 0.5, 1 / 3)] == ["3", "-2", "0.5", "0.3333333333"]


# -- offline: bundled samples ---------------------------------------------------------------

REAL = {
    "synthetic_mmlu": (MultipleChoiceSample, 80),
    "fineweb": (TextSample, 60),
    "synthetic_1_sft": (ReferenceSample, 40),
    "codeforces_cots": (ReferenceSample, 30),
    "boolq": (ExactAnswerSample, 40),
    "mawps": (ExactAnswerSample, 40),
}
OFFLINE = DataConfig(offline=True, endpoint="http://127.0.0.1:9")  # port 9: nothing there


@pytest.mark.parametrize("dataset", sorted(REAL))
def test_offline_loads_are_deterministic_per_seed(dataset):
    kind, size = REAL[dataset]
    first = load_task_samples(dataset, seed=11, count=10, config=OFFLINE)
    again = load_task_samples(dataset, seed=11, count=10, config=OFFLINE)
    other = load_task_samples(dataset, seed=12, count=10, config=OFFLINE)
    assert first == again
    assert first != other
    assert len(first) == 10 and len(set(first)) == 10
    assert all(isinstance(s, kind) for s in first)
    everything = load_task_samples(dataset, seed=11, count=10_000, config=OFFLINE)
    assert len(everything) == size  # every bundled row is well-formed; fewer than asked


def test_large_seeds_are_fine():
    seed = int("f" * 64, 16)  # a SHA-256 sized seed, as the validator derives
    assert len(load_task_samples("mawps", seed=seed, count=3, config=OFFLINE)) == 3


def test_loader_options_reach_the_shaper():
    plain = load_task_samples(
        "synthetic_mmlu", seed=1, count=5, options={"example_prefix": False}, config=OFFLINE
    )
    assert not any(s.question.startswith(MMLU_EXAMPLE_PREFIX) for s in plain)
    short = load_task_samples("fineweb", seed=1, count=5, options={"max_chars": 30}, config=OFFLINE)
    assert all(len(s.text) <= 30 for s in short)
    math_only = load_task_samples(
        "synthetic_1_sft",
        seed=1,
        count=100,
        options={"task_types": "verifiable_math"},
        config=OFFLINE,
    )
    assert len(math_only) == 25 and all("\\boxed{" in s.reference for s in math_only)


# -- local override files -------------------------------------------------------------------


def test_jsonl_override_replaces_the_source_and_skips_bad_rows(tmp_path, caplog):
    good = [{"question": f"q{i}", "result": str(i)} for i in range(5)]
    lines = [json.dumps(r) for r in good] + ["{broken", "[1, 2]", json.dumps({"question": "q"})]
    (tmp_path / "mawps.jsonl").write_text("\n".join(lines) + "\n\n")
    config = DataConfig(data_dir=tmp_path, endpoint="http://127.0.0.1:9")  # online, but unused
    with caplog.at_level(logging.WARNING, logger="finetune.datasets"):
        samples = load_task_samples("mawps", seed=3, count=10, config=config)
    assert sorted(s.prompt for s in samples) == [f"q{i}" for i in range(5)]
    messages = " ".join(caplog.messages)
    assert "line 6 skipped: not JSON" in messages
    assert "line 7 skipped: not a JSON object" in messages
    assert "skipped 1 malformed rows: no finite numeric result" in messages


def test_parquet_override(tmp_path):
    rows = [{"text": f"doc {i}"} for i in range(8)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "fineweb.parquet")
    assert read_rows(tmp_path / "fineweb.parquet") == rows
    config = DataConfig(offline=True, data_dir=tmp_path)
    samples = load_task_samples("fineweb", seed=5, count=3, config=config)
    assert len(samples) == 3 and all(s.text.startswith("doc ") for s in samples)
    assert samples == load_task_samples("fineweb", seed=5, count=3, config=config)


def test_offline_without_override_uses_the_bundled_sample(tmp_path):
    config = DataConfig(offline=True, data_dir=tmp_path)  # empty folder
    assert len(load_task_samples("boolq", seed=1, count=4, config=config)) == 4


def test_unreadable_file_type_is_data_unavailable(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataUnavailable, match="unknown type"):
        read_rows(tmp_path / "x.csv")
    with pytest.raises(DataUnavailable, match="does not exist"):
        read_rows(tmp_path / "missing.jsonl")


# -- remote, through the loopback server ----------------------------------------------------

DOCS = {f"CC-MAIN-{n}": [{"text": f"{n} doc {i}"} for i in range(350)] for n in (1, 2)}


@pytest.fixture
def web():
    tables = {(config, "train"): rows for config, rows in DOCS.items()}
    tables[("default", "train")] = DOCS["CC-MAIN-1"] + DOCS["CC-MAIN-2"]
    mmlu = [{"challenge": MCQ, "reference": "B"}] * 30 + [
        {"challenge": "bad", "reference": "B"}
    ] * 5
    datasets = {
        "HuggingFaceFW/fineweb-edu-score-2": tables,
        "org/mmlu": {("default", "train"): mmlu},
    }
    with FakeDatasetsServer(datasets, shas={"org/mmlu": "cafe0123"}) as server:
        yield server


def _online(server: FakeDatasetsServer, **extra) -> DataConfig:
    return DataConfig(endpoint=server.url, hub_endpoint=server.url, backoff_s=0.001, **extra)


def test_remote_pages_are_a_function_of_the_seed(web):
    config = _online(web)
    first = load_task_samples("fineweb", seed=21, count=150, config=config)
    pages_first = [q for p, q in web.requests if p == "/rows"]
    web.requests.clear()
    again = load_task_samples("fineweb", seed=21, count=150, config=config)
    assert first == again
    assert [q for p, q in web.requests if p == "/rows"] == pages_first
    assert len(first) == 150
    # the crawl-dump configs are used, never the merged "default" one
    assert {q["config"] for q in pages_first} <= {"CC-MAIN-1", "CC-MAIN-2"}
    assert all(int(q["offset"]) % 100 == 0 and int(q["length"]) <= 100 for q in pages_first)
    web.requests.clear()
    other = load_task_samples("fineweb", seed=22, count=150, config=config)
    assert other != first


def test_remote_returns_fewer_when_the_source_is_small(web, caplog):
    config = _online(web)
    options = {"dataset_id": "org/mmlu", "example_prefix": False}
    with caplog.at_level(logging.WARNING, logger="finetune.datasets"):
        samples = load_task_samples(
            "synthetic_mmlu", seed=1, count=50, options=options, config=config
        )
    assert len(samples) == 30
    assert "skipped 5 malformed rows" in " ".join(caplog.messages)


def test_pinned_revision_must_match_the_served_one(web):
    options = {"dataset_id": "org/mmlu"}
    good = _online(web, revisions={"org/mmlu": "cafe"})
    assert len(load_task_samples("synthetic_mmlu", seed=1, count=5, options=options, config=good))
    stale = _online(web, revisions={"synthetic_mmlu": "0000aaaa"})
    with pytest.raises(DataUnavailable, match="pinned to revision 0000aaaa") as info:
        load_task_samples("synthetic_mmlu", seed=1, count=5, options=options, config=stale)
    assert info.value.reason == "revision_mismatch"


def test_remote_failure_is_data_unavailable(web):
    web.fail_next(503, times=10)
    config = _online(web, retries=1)
    with pytest.raises(DataUnavailable, match="HTTP 503"):
        load_task_samples("fineweb", seed=1, count=5, config=config)


def test_missing_split_names_what_exists(web):
    config = _online(web)
    with pytest.raises(DataUnavailable, match="has no non-empty"):
        load_task_samples(
            "synthetic_mmlu",
            seed=1,
            count=5,
            options={"dataset_id": "org/mmlu", "split": "test"},
            config=config,
        )


def test_synthetic_qa_gives_question_answer_pairs():
    from finetune.datasets import DataConfig, ReferenceSample, load_task_samples

    samples = load_task_samples("synthetic_qa", seed=3, count=5, config=DataConfig(offline=True))
    assert len(samples) == 5
    assert all(isinstance(s, ReferenceSample) and s.prompt and s.reference for s in samples)
    again = load_task_samples("synthetic_qa", seed=3, count=5, config=DataConfig(offline=True))
    assert samples == again


def test_codeforces_samples_are_dropped_when_too_long_not_cut():
    sample = shape_codeforces({"messages": _chat("Q", "A trace")})
    assert sample.drop_if_longer
    other = shape_synthetic_1(
        {"task_type": "verifiable_math", "messages": _chat("Q", "<think>x</think> \\boxed{4}")}
    )
    assert not other.drop_if_longer


def test_absurd_split_size_from_the_server_does_not_crash_the_loader(web):
    # 10**400 rows: a float page count would overflow; the pages are then simply empty.
    size = '{"size": {"splits": [{"config": "default", "split": "train", "num_rows": 1%s}]}}'
    web.garbage_next((size % ("0" * 400)).encode())
    options = {"dataset_id": "org/mmlu", "example_prefix": False}
    samples = load_task_samples(
        "synthetic_mmlu", seed=1, count=5, options=options, config=_online(web)
    )
    assert samples == []


def test_option_like_lines_in_the_stem_are_not_options():
    from finetune.datasets.samples import MultipleChoiceSample
    from finetune.datasets.shapers import mcq_to_qa, shape_mmlu

    challenge = ("Consider the claims:\nA) energy is conserved\nB) entropy never falls\nWhich hold?\n"
                 "A. only A\nB. only B\nC. both\nD. neither")
    sample = shape_mmlu({"challenge": challenge, "reference": "C"})
    stem, answer = mcq_to_qa(MultipleChoiceSample(question=sample.question, answer="C"))
    assert answer == "both"
    assert stem.endswith("Which hold?") and "A) energy is conserved" in stem
