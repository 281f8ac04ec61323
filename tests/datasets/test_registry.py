"""Dispatch by id, unknown ids and options, the generated data sets, and DataConfig."""

from __future__ import annotations

import sys

import pydantic
import pytest

from finetune.datasets import DataConfig, known_datasets, load_task_samples
from finetune.datasets.registry import loader_entry, resolve_options
from finetune.datasets.samples import IfEvalSample, ReferenceSample
from finetune.errors import ConfigError, DataUnavailable, UnknownIdError

OFFLINE = DataConfig(offline=True, endpoint="http://127.0.0.1:9")

ALL_IDS = [
    "boolq",
    "codeforces_cots",
    "dyck",
    "fineweb",
    "held_out",
    "if_eval_v1",
    "if_eval_v2",
    "mawps",
    "synthetic_1_sft",
    "synthetic_mmlu",
    "synthetic_qa",
    "word_sorting",
]


def test_known_datasets():
    assert known_datasets() == ALL_IDS


@pytest.mark.parametrize(("typo", "nearest"), [("finewb", "fineweb"), ("if_eval_2", "if_eval_v2")])
def test_unknown_id_lists_known_ones_and_suggests_the_nearest(typo, nearest):
    with pytest.raises(UnknownIdError) as info:
        load_task_samples(typo, seed=0, count=1, config=OFFLINE)
    message = str(info.value)
    assert f"Did you mean {nearest!r}?" in message
    assert all(name in message for name in ALL_IDS)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, KeyError)
    assert info.value.facts["dataset"] == typo


def test_unknown_id_without_a_near_match_has_no_suggestion():
    with pytest.raises(UnknownIdError) as info:
        loader_entry("zzzzzzzz")
    assert "Did you mean" not in str(info.value)


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match="no option 'max_char'.*max_chars"):
        load_task_samples("fineweb", seed=0, count=1, options={"max_char": 5}, config=OFFLINE)


@pytest.mark.parametrize(
    ("dataset", "options"),
    [
        ("fineweb", {"max_chars": "100"}),
        ("fineweb", {"max_chars": True}),
        ("synthetic_mmlu", {"example_prefix": 1}),
        ("boolq", {"split": 3}),
        ("dyck", {"anything": 1}),
    ],
)
def test_ill_typed_options_are_config_errors(dataset, options):
    with pytest.raises(ConfigError):
        load_task_samples(dataset, seed=0, count=1, options=options, config=OFFLINE)


def test_resolve_options_overlays_defaults():
    entry = loader_entry("fineweb")
    resolved = resolve_options(entry, {"max_chars": 10})
    assert resolved["max_chars"] == 10
    assert resolved["dataset_id"] == "HuggingFaceFW/fineweb-edu-score-2"
    assert entry.defaults["max_chars"] == 20_000  # defaults untouched


def test_counts():
    assert load_task_samples("boolq", seed=0, count=0, config=OFFLINE) == []
    with pytest.raises(ConfigError, match="count"):
        load_task_samples("boolq", seed=0, count=-1, config=OFFLINE)


def test_missing_generator_module_is_data_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "finetune.datasets.dyck", None)  # import now fails
    with pytest.raises(DataUnavailable, match="loader unavailable"):
        load_task_samples("dyck", seed=0, count=1, config=OFFLINE)


@pytest.mark.parametrize("dataset", ["word_sorting", "dyck"])
def test_generated_reference_tasks(dataset):
    pytest.importorskip(f"finetune.datasets.{dataset}")
    first = load_task_samples(dataset, seed=5, count=8, config=OFFLINE)
    assert len(first) == 8 and all(isinstance(s, ReferenceSample) for s in first)
    assert first == load_task_samples(dataset, seed=5, count=8, config=OFFLINE)
    assert first != load_task_samples(dataset, seed=6, count=8, config=OFFLINE)


@pytest.mark.parametrize("dataset", ["if_eval_v1", "if_eval_v2"])
def test_if_eval_questions_come_from_the_question_source(dataset):
    pytest.importorskip("finetune.datasets.ifeval")
    samples = load_task_samples(dataset, seed=9, count=6, config=OFFLINE)
    assert len(samples) == 6 and all(isinstance(s, IfEvalSample) for s in samples)
    assert samples == load_task_samples(dataset, seed=9, count=6, config=OFFLINE)
    bundled = load_task_samples("synthetic_mmlu", seed=0, count=1000, config=OFFLINE)
    stems = {s.question.split("[Question]\n")[1].split("\nA. ")[0] for s in bundled}
    for sample in samples:
        assert sample.questions[0] != sample.questions[1]
        assert set(sample.questions) <= stems
        assert all("\nA. " not in q for q in sample.questions)


def test_if_eval_with_too_few_questions_is_data_unavailable(tmp_path):
    pytest.importorskip("finetune.datasets.ifeval")
    (tmp_path / "synthetic_mmlu.jsonl").write_text(
        '{"challenge": "Q?\\nA. a\\nB. b\\nC. c\\nD. d", "reference": "A"}\n'
    )
    config = DataConfig(offline=True, data_dir=tmp_path)
    with pytest.raises(DataUnavailable, match="at least two questions"):
        load_task_samples("if_eval_v2", seed=0, count=3, config=config)


def test_data_config_is_frozen_and_strict():
    config = DataConfig(revisions={"google/boolq": "abc", "mawps": "def"})
    with pytest.raises(pydantic.ValidationError):
        config.offline = True  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        DataConfig(timeout=3)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        DataConfig(timeout_s=0)
    assert config.revision_for("google/boolq", "boolq") == "abc"
    assert config.revision_for("MU-NLPC/Calc-mawps", "mawps") == "def"
    assert config.revision_for("x/y", "fineweb") is None


def test_held_out_draws_one_pool_member_per_round_from_the_seed():
    from finetune.datasets.loaders import HELD_OUT_POOL, SALT_HELD_OUT, held_out_choice, load_dyck

    pool = ",".join(HELD_OUT_POOL)
    chosen = {held_out_choice(seed, pool) for seed in range(40)}
    assert chosen == set(HELD_OUT_POOL)  # every member comes up over rounds
    assert held_out_choice(7, pool) == held_out_choice(7, "synthetic_qa, dyck,word_sorting")  # order-free
    seed = next(s for s in range(100) if held_out_choice(s, "dyck,word_sorting") == "dyck")
    samples = load_task_samples("held_out", seed=seed, count=5, options={"pool": "dyck,word_sorting"},
                                config=OFFLINE)
    assert all(isinstance(x, ReferenceSample) for x in samples) and len(samples) == 5
    # Drawn with its own salt: not the samples the DYCK task itself scores with that seed.
    assert samples == load_dyck(seed ^ SALT_HELD_OUT, 5, {}, OFFLINE)
    assert samples != load_task_samples("dyck", seed=seed, count=5, config=OFFLINE)


@pytest.mark.parametrize("pool", ["", "dyck,fineweb", " , "])
def test_held_out_pool_must_hold_known_reference_loss_sets(pool):
    with pytest.raises(ConfigError, match="held_out pool"):
        load_task_samples("held_out", seed=0, count=1, options={"pool": pool}, config=OFFLINE)
