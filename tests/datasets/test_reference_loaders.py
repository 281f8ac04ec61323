"""Reference draws through the registry: dispatch by `DataRules`, options, local files, the
generated sets, and the data sets whose reference draws are not reproduced."""

from __future__ import annotations

import json

import pytest

from finetune.datasets import DataConfig, ReferenceSample, TextSample, load_task_samples
from finetune.datasets.reference_generated import (
    DYCK_PAIRS,
    WORD_SORTING_PROMPT,
    basic_english_pool,
)
from finetune.datasets.reference_shapers import REFERENCE_SYSTEM_PROMPT
from finetune.errors import ConfigError, DataUnavailable
from finetune.protocol import NEXT, REFERENCE_31
from tests.datasets.fake_datasets_server import FakeDatasetsServer

REFERENCE = REFERENCE_31.data
OFFLINE = DataConfig(offline=True, endpoint="http://127.0.0.1:9")  # port 9: nothing there


def test_the_default_rules_are_next_and_salted():
    assert NEXT.data.draws == "salted"
    default = load_task_samples("word_sorting", seed=5, count=3, config=OFFLINE)
    assert default == load_task_samples(
        "word_sorting", seed=5, count=3, config=OFFLINE, rules=NEXT.data
    )
    assert default != load_task_samples(
        "word_sorting", seed=5, count=3, config=OFFLINE, rules=REFERENCE
    )


def test_reference_word_sorting_uses_basic_english_and_a_trailing_space():
    pool = set(basic_english_pool())
    samples = load_task_samples("word_sorting", seed=9, count=50, config=OFFLINE, rules=REFERENCE)
    for sample in samples:
        assert sample.prompt.startswith(WORD_SORTING_PROMPT) and sample.prompt.endswith(". ")
        words = sample.prompt[len(WORD_SORTING_PROMPT) : -2].split(" ")
        assert 2 <= len(words) <= 20 and len(set(words)) == len(words) and set(words) <= pool
        assert sample.reference == " ".join(sorted(words))
        assert sample.system is None


def test_reference_generation_is_a_prefix_of_a_longer_run():
    for dataset in ("word_sorting", "dyck"):
        short = load_task_samples(dataset, seed=3, count=7, config=OFFLINE, rules=REFERENCE)
        long = load_task_samples(dataset, seed=3, count=40, config=OFFLINE, rules=REFERENCE)
        assert long[:7] == short


def test_reference_dyck_answers_close_the_prompt():
    closers = {close: open_ for open_, close in DYCK_PAIRS}
    samples = load_task_samples("dyck", seed=4, count=100, config=OFFLINE, rules=REFERENCE)
    for sample in samples:
        shown = sample.prompt.rsplit("Input: ", 1)[1].split(" ")
        answer = sample.reference.split(" ")
        assert 1 <= len(answer) <= 3 and all(c in closers for c in answer)
        stack: list[str] = []
        for char in shown + answer:
            if char in closers:
                assert stack.pop() == closers[char]
            else:
                stack.append(char)
        assert not stack and 4 <= len(shown) + len(answer) <= 40


@pytest.mark.parametrize(
    "dataset", ["synthetic_mmlu", "if_eval_v1", "if_eval_v2", "synthetic_qa", "boolq", "mawps"]
)
def test_unreproduced_reference_draws_are_data_unavailable_with_the_reason(dataset):
    with pytest.raises(DataUnavailable, match="reference draws are not reproduced: ") as info:
        load_task_samples(dataset, seed=1, count=3, config=OFFLINE, rules=REFERENCE)
    assert info.value.reason == "not_reproduced"
    assert load_task_samples(dataset, seed=1, count=3, config=OFFLINE)  # salted still works


# -- local rows -------------------------------------------------------------------------------


def test_offline_reference_draws_read_the_bundled_rows_in_file_order():
    sft = load_task_samples("synthetic_1_sft", seed=1, count=5, config=OFFLINE, rules=REFERENCE)
    again = load_task_samples("synthetic_1_sft", seed=2, count=5, config=OFFLINE, rules=REFERENCE)
    assert sft == again and len(sft) == 5  # no draws: the seed does not matter
    assert all(s.system == REFERENCE_SYSTEM_PROMPT for s in sft)
    assert sft[0].reference.endswith(" \\boxed{28}")  # the first bundled row, shaped as R does
    codeforces = load_task_samples(
        "codeforces_cots", seed=1, count=100, config=OFFLINE, rules=REFERENCE
    )
    assert len(codeforces) == 30 and not any(s.drop_if_longer for s in codeforces)
    fineweb = load_task_samples("fineweb", seed=1, count=400, config=OFFLINE, rules=REFERENCE)
    assert len(fineweb) == 60 and all(isinstance(s, TextSample) for s in fineweb)


def test_override_file_under_reference_draws(tmp_path):
    rows = [
        {"task_type": "verifiable_math", "messages": [{"content": "q1"}, {"content": "a \\boxed{1}"}]},
        {"task_type": "other", "messages": []},
        {"task_type": "code_output_prediction", "messages": [{"content": "q2"}, {"content": "x"}]},
    ]
    (tmp_path / "synthetic_1_sft.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    config = DataConfig(data_dir=tmp_path, endpoint="http://127.0.0.1:9")
    samples = load_task_samples("synthetic_1_sft", seed=0, count=9, config=config, rules=REFERENCE)
    assert [(s.prompt, s.reference) for s in samples] == [
        ("q1", "a \\boxed{1}"),
        ("q2", 'x {"output": ""}'),
    ]
    (tmp_path / "fineweb.jsonl").write_text(json.dumps({"id": 1}))
    with pytest.raises(DataUnavailable, match="without text"):
        load_task_samples("fineweb", seed=0, count=9, config=config, rules=REFERENCE)


# -- remote -----------------------------------------------------------------------------------


def _sft_rows(n):
    return [
        {
            "task_type": "verifiable_math" if i % 3 else "llm_judgeable",
            "messages": [{"content": f"q{i}"}, {"content": f"t{i} \\boxed{{{i}}}"}],
        }
        for i in range(n)
    ]


@pytest.fixture
def sft_server():
    datasets = {"PrimeIntellect/SYNTHETIC-1-SFT-Data": {("default", "train"): _sft_rows(3000)}}
    with FakeDatasetsServer(datasets) as server:
        yield server


def test_sft_reference_draws_stop_at_the_target_in_buffer_order(sft_server):
    config = DataConfig(endpoint=sft_server.url)
    samples = load_task_samples(
        "synthetic_1_sft", seed=8, count=120, config=config, rules=REFERENCE
    )
    assert len(samples) == 120
    pages = [int(q["offset"]) for p, q in sft_server.requests if p == "/rows"]
    # one first page (about 67 usable rows of 100), then one more page reaches 120
    assert len(pages) == 2
    order = [int(s.prompt[1:]) for s in samples]
    expected = [i for o in pages for i in range(o, o + 100) if i % 3][:120]
    assert order == expected
    assert all(isinstance(s, ReferenceSample) and not s.drop_if_longer for s in samples)


def test_reference_page_options_are_checked(sft_server):
    config = DataConfig(endpoint=sft_server.url)
    with pytest.raises(ConfigError, match="rows_per_page >= 1"):
        load_task_samples(
            "synthetic_1_sft",
            seed=1,
            count=5,
            options={"rows_per_page": 0},
            config=config,
            rules=REFERENCE,
        )
    assert sft_server.requests == []


def test_pinned_revisions_hold_under_reference_draws(sft_server):
    sft_server.shas["PrimeIntellect/SYNTHETIC-1-SFT-Data"] = "beef"
    config = DataConfig(
        endpoint=sft_server.url,
        hub_endpoint=sft_server.url,
        revisions={"synthetic_1_sft": "cafe"},
    )
    with pytest.raises(DataUnavailable, match="pinned") as info:
        load_task_samples("synthetic_1_sft", seed=1, count=5, config=config, rules=REFERENCE)
    assert info.value.reason == "revision_mismatch"
    assert sft_server.paths() == ["/api/datasets/PrimeIntellect/SYNTHETIC-1-SFT-Data"]
