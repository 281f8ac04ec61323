"""evaluate_model end to end on the tiny model, prepare_task_data, and safe model loading."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from finetune.competition import (
    Competition,
    EpsilonSpec,
    EvalTaskSpec,
    GenerationSpec,
    Method,
    ModelConstraints,
    Normalization,
    NormKind,
)
from finetune.datasets import DataConfig
from finetune.datasets.samples import (
    ExactAnswerSample,
    IfEvalRule,
    IfEvalSample,
    MultipleChoiceSample,
    ReferenceSample,
    TextSample,
)
from finetune.errors import DataUnavailable, ModelRejected
from finetune.eval import (
    BatchedEngine,
    ChoiceResult,
    LossResult,
    NaiveEngine,
    TaskData,
    evaluate_model,
    load_model,
    prepare_task_data,
)
from finetune.eval import evaluate as evaluate_module
from finetune.protocol import REFERENCE_31

EXP20 = Normalization(kind=NormKind.INVERSE_EXPONENTIAL, ceiling=20.0)


def task(name, method, weight, *, samples=3, generation=None, **kw) -> EvalTaskSpec:
    return EvalTaskSpec(
        name=name, method=method, dataset=name.lower(), weight=weight, samples=samples,
        generation=generation, **kw,
    )


def tiny_competition(tasks, *, sequence_length=256, **constraints) -> Competition:
    return Competition(
        id=200,
        name="TEST_TINY",
        constraints=ModelConstraints(
            max_params=constraints.get("max_params", 5_000_000),
            max_bytes=50 * 1024**2,
            sequence_length=sequence_length,
            allowed_architectures=("LlamaForCausalLM",),
            load_dtype="float32",
            epsilon=EpsilonSpec(start=0.05, end=0.01, decay_blocks=100),
        ),
        tasks=tuple(tasks),
    )


ALL_TASKS = (
    task("MC", Method.MULTIPLE_CHOICE, 0.2,
         generation=GenerationSpec(max_new_tokens=20, repetition_penalty=1.1)),
    task("MC_LOGLIK", Method.MULTIPLE_CHOICE_LOGLIK, 0.2),
    task("REF", Method.REFERENCE_LOSS, 0.2, normalization=Normalization(
        kind=NormKind.INVERSE_EXPONENTIAL, ceiling=40.0)),
    task("TEXT", Method.TEXT_LOSS, 0.2, normalization=EXP20),
    task("IF", Method.IF_EVAL, 0.1,
         generation=GenerationSpec(max_new_tokens=24, repetition_penalty=1.2)),
    task("EXACT", Method.EXACT_ANSWER, 0.1, generation=GenerationSpec(max_new_tokens=8)),
)

# Prompts of very different lengths, so batches mix short and long rows (and the long ones are
# cut from the left to the sequence length of 256).
LONG = "Consider the following facts carefully. " * 40
SAMPLES = {
    "MC": (
        MultipleChoiceSample("Which is a fruit? A) car B) apple C) rock D) sky", "B"),
        MultipleChoiceSample(LONG + "Pick one. A) x B) y C) z D) w", "D"),
        MultipleChoiceSample("2+2? A) 4 B) 5", "A", ("A", "B")),
    ),
    "MC_LOGLIK": (
        MultipleChoiceSample("Which is a fruit? A) car B) apple C) rock D) sky", "B"),
        MultipleChoiceSample(LONG + "Pick one. A) x B) y C) z D) w", "D"),
    ),
    "REF": (
        ReferenceSample("Sort the following words alphabetically: pear apple fig .", "apple fig pear"),
        ReferenceSample(LONG + "Now sort: b a", "a b", system="You sort words."),
        ReferenceSample("Say hi", "hi " * 300),  # reference alone exceeds the sequence length
    ),
    "TEXT": (
        TextSample("The water cycle moves water between the sea, the air and the land."),
        TextSample(LONG * 3),
        TextSample("Short."),
    ),
    "IF": (
        IfEvalSample(("Why is the sky blue?", "Name a large animal."),
                     (IfEvalRule(kind="all_lower"), IfEvalRule(kind="no_commas"))),
        IfEvalSample(("What is rain?", LONG + "Describe a tree."),
                     (IfEvalRule(kind="words_at_most", n=30),)),
    ),
    "EXACT": (
        ExactAnswerSample("Is the sea salty?", ("yes",), context="The sea holds salt."),
        ExactAnswerSample("Tom has 3 apples and buys 4. How many?", ("7",), kind="number"),
    ),
}


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(tiny_model_dir)


def test_batched_and_naive_engines_agree_end_to_end(loaded):
    competition = tiny_competition(ALL_TASKS)
    data = TaskData(seed=7, samples=SAMPLES)
    model, _ = loaded
    naive = evaluate_model(loaded, competition, data, engine=NaiveEngine(model))
    batched = evaluate_model(loaded, competition, data, engine=BatchedEngine(model, batch_tokens=512))
    assert set(naive.tasks) == {t.name for t in ALL_TASKS} and not naive.dropped
    for name in ("MC", "MC_LOGLIK", "IF", "EXACT"):
        assert batched.tasks[name].raw == naive.tasks[name].raw, name
    for name in ("REF", "TEXT"):
        assert math.isfinite(naive.tasks[name].raw)
        assert batched.tasks[name].raw == pytest.approx(naive.tasks[name].raw, rel=1e-4), name
    assert batched.total == pytest.approx(naive.total, rel=1e-4)
    for name, score in naive.tasks.items():
        assert score.samples == len(SAMPLES[name])
        assert score.weighted == pytest.approx(competition.task(name).weight * score.normalized)
    assert naive.total == pytest.approx(sum(s.weighted for s in naive.tasks.values()))
    assert 0.0 <= naive.tasks["MC"].raw <= 1.0 and 0.0 <= naive.tasks["IF"].raw <= 1.0


def test_reference_rules_end_to_end_with_both_engines(loaded):
    # REF's last sample has a reference longer than the sequence length: kept whole here.
    competition = tiny_competition(ALL_TASKS)
    data = TaskData(seed=7, samples=SAMPLES)
    model, _ = loaded
    rules = REFERENCE_31.eval
    naive = evaluate_model(loaded, competition, data, engine=NaiveEngine(model), rules=rules)
    batched = evaluate_model(loaded, competition, data, rules=rules, batch_tokens=512)
    ours = evaluate_model(loaded, competition, data, engine=NaiveEngine(model))
    for name in ("MC", "MC_LOGLIK", "IF", "EXACT"):
        assert batched.tasks[name].raw == naive.tasks[name].raw, name
    for name in ("REF", "TEXT"):
        assert math.isfinite(naive.tasks[name].raw)
        assert batched.tasks[name].raw == pytest.approx(naive.tasks[name].raw, rel=1e-4), name
        assert naive.tasks[name].raw != ours.tasks[name].raw, name  # padding, whole references


def test_the_fixed_tokenizer_comes_from_tokenizer_dir(tiny_model_dir, gpt4_tokenizer_dir):
    base = tiny_competition([task("MC_LOGLIK", Method.MULTIPLE_CHOICE_LOGLIK, 1.0)])
    constraints = base.constraints.model_copy(update={"tokenizer": "Xenova/gpt-4"})
    competition = base.model_copy(update={"constraints": constraints})
    data = TaskData(seed=0, samples={"MC_LOGLIK": SAMPLES["MC_LOGLIK"][:1]})
    seen = []

    class Recording:  # the gpt-4 ids never reach the tiny model
        def choice_logprobs(self, requests, progress=None):
            seen.extend(requests)
            return [ChoiceResult((0.0, -1.0, -1.0, -1.0)) for _ in requests]

    evaluate_model(tiny_model_dir, competition, data, engine=Recording(),
                   rules=REFERENCE_31.eval, tokenizer_dir=gpt4_tokenizer_dir)
    assert seen[0].prompt_ids[0] == 100264  # <|im_start|> of Xenova/gpt-4


def test_missing_task_data_rescales_the_other_weights(loaded):
    competition = tiny_competition(ALL_TASKS[1:3] + (task("GONE", Method.TEXT_LOSS, 0.6),),)
    data = TaskData(seed=1, samples={k: SAMPLES[k] for k in ("MC_LOGLIK", "REF")},
                    dropped={"GONE": "data_unavailable: offline"})
    result = evaluate_model(loaded, competition, data, engine=NaiveEngine(loaded[0]))
    assert result.dropped == {"GONE": "data_unavailable: offline"}
    assert set(result.tasks) == {"MC_LOGLIK", "REF"}
    weighted = {n: s.weighted / s.normalized for n, s in result.tasks.items()}
    assert weighted == pytest.approx({"MC_LOGLIK": 0.5, "REF": 0.5})
    as_json = json.loads(json.dumps(result.to_json()))
    assert set(as_json) == {"competition", "seed", "tasks", "total", "dropped"}
    assert set(as_json["tasks"]["REF"]) >= {"raw", "normalized", "weighted", "samples"}
    assert as_json["seed"] == 1 and as_json["competition"] == "TEST_TINY"


def test_no_task_left_scores_inf(loaded):
    competition = tiny_competition([task("REF", Method.REFERENCE_LOSS, 1.0)])
    result = evaluate_model(loaded, competition, TaskData(seed=0), engine=NaiveEngine(loaded[0]))
    assert result.total == math.inf and result.dropped == {"REF": "no_samples"}


class NanEngine(NaiveEngine):
    def loss(self, requests, progress=None):
        return [LossResult(sum_nll=float("nan"), n_tokens=1) for _ in requests]


def test_nan_loss_fails_the_task(loaded):
    competition = tiny_competition([task("REF", Method.REFERENCE_LOSS, 1.0)])
    data = TaskData(seed=0, samples={"REF": SAMPLES["REF"][:1]})
    result = evaluate_model(loaded, competition, data, engine=NanEngine(loaded[0]))
    assert result.tasks["REF"].raw == math.inf and result.total == math.inf
    assert result.tasks["REF"].failure == "non_finite_loss: the loss is NaN or inf on 1 of 1 samples"
    assert result.to_json()["tasks"]["REF"]["failure"] == result.tasks["REF"].failure


class LoopingEngine(NaiveEngine):
    """Continues every prompt with the same token: the degeneracy gate's broken model."""

    def generate(self, requests, progress=None):
        from finetune.eval import GenerationResult

        return [GenerationResult((5,) * r.max_new_tokens) for r in requests]


@pytest.mark.parametrize(("normalization", "total_finite"), [(EXP20, True), (Normalization(), False)])
def test_a_failed_task_says_why_and_counts_by_its_normalisation(loaded, normalization, total_finite):
    competition = tiny_competition([task("TEXT", Method.TEXT_LOSS, 0.5, normalization=normalization),
                                    task("REF", Method.REFERENCE_LOSS, 0.5)])
    data = TaskData(seed=0, samples={"TEXT": SAMPLES["TEXT"], "REF": SAMPLES["REF"][:1]})
    result = evaluate_model(loaded, competition, data, engine=LoopingEngine(loaded[0]))
    text = result.tasks["TEXT"]
    assert text.raw == math.inf and text.failure == "degenerate: 20 of 20 gate positions agree"
    assert result.tasks["REF"].failure == ""
    # Capped: the failed task counts its maximum, 1, and the model still has a score.
    # Uncapped: it stays inf, and so does the model's total.
    assert text.normalized == (1.0 if total_finite else math.inf)
    assert math.isfinite(result.total) is total_finite


def test_progress_callback_counts_every_request(loaded):
    competition = tiny_competition([task("TEXT", Method.TEXT_LOSS, 1.0, normalization=EXP20)])
    seen = []
    evaluate_model(loaded, competition, TaskData(seed=0, samples={"TEXT": SAMPLES["TEXT"]}),
                   engine=NaiveEngine(loaded[0]), progress=lambda *a: seen.append(a))
    assert seen[0] == ("TEXT", 0, 5) and seen[-1] == ("TEXT", 5, 5)  # 2 gate + 3 documents


def test_evaluate_from_a_directory_with_the_default_engine(tiny_model_dir, loaded):
    competition = tiny_competition([task("MC_LOGLIK", Method.MULTIPLE_CHOICE_LOGLIK, 1.0)])
    data = TaskData(seed=0, samples={"MC_LOGLIK": SAMPLES["MC_LOGLIK"]})
    from_dir = evaluate_model(tiny_model_dir, competition, data, progress=True)
    in_memory = evaluate_model(loaded, competition, data, engine=NaiveEngine(loaded[0]))
    assert from_dir.tasks["MC_LOGLIK"].raw == in_memory.tasks["MC_LOGLIK"].raw


def test_prepare_task_data_drops_tasks_without_enough_data(monkeypatch):
    calls = []

    def fake_load(dataset, *, seed, count, options=None, config=DataConfig(), rules=None):  # noqa: B008
        calls.append((dataset, seed, count, dict(options or {}), config.offline))
        if dataset == "broken":
            raise DataUnavailable("no rows today")
        return [TextSample(f"doc {i}") for i in range(2 if dataset == "few" else count)]

    monkeypatch.setattr(evaluate_module, "load_task_samples", fake_load)
    competition = tiny_competition([
        task("OK", Method.TEXT_LOSS, 0.4, samples=5, dataset_options={"max_chars": 100}),
        EvalTaskSpec(name="BROKEN", method=Method.TEXT_LOSS, dataset="broken", weight=0.3, samples=5),
        EvalTaskSpec(name="FEW", method=Method.TEXT_LOSS, dataset="few", weight=0.3, samples=5,
                     min_samples=3),
    ])
    data = prepare_task_data(competition, seed=42, config=DataConfig(offline=True))
    assert [len(v) for v in data.samples.values()] == [5] and data.seed == 42
    assert data.dropped["BROKEN"].startswith("data_unavailable") and "no rows" in data.dropped["BROKEN"]
    assert data.dropped["FEW"].startswith("too_few_samples")
    assert calls[0] == ("ok", 42, 5, {"max_chars": 100}, True)
    # Fewer samples asked than min_samples: the minimum is capped to the count asked.
    small = prepare_task_data(competition, seed=42, config=DataConfig(offline=True),
                              sample_counts={"FEW": 2})
    assert len(small.samples["FEW"]) == 2


def test_prepare_task_data_offline_with_real_loaders():
    competition = tiny_competition([
        EvalTaskSpec(name="WORD_SORTING", method=Method.REFERENCE_LOSS, dataset="word_sorting",
                     weight=1.0, samples=4),
    ])
    first = prepare_task_data(competition, seed=3, config=DataConfig(offline=True))
    again = prepare_task_data(competition, seed=3, config=DataConfig(offline=True))
    assert first == again and len(first.samples["WORD_SORTING"]) == 4


# --- loading ---------------------------------------------------------------------------------


def test_load_model_refuses_pickle_files(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ModelRejected) as info:
        load_model(model_dir)
    assert info.value.reason == "pickle_files" and "pytorch_model.bin" in str(info.value)


def test_load_model_needs_safetensors(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelRejected) as info:
        load_model(model_dir)
    assert info.value.reason == "no_safetensors"
    with pytest.raises(ModelRejected) as missing:
        load_model(tmp_path / "absent")
    assert missing.value.reason == "not_found"


def write_not_causal_lm(model_dir) -> None:
    """An image model's config beside a (tiny) safetensors file."""
    import torch
    from safetensors.torch import save_file

    model_dir.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(2)}, str(model_dir / "model.safetensors"))
    config = {"model_type": "vit", "architectures": ["ViTModel"], "hidden_size": 8,
              "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8}
    (model_dir / "config.json").write_text(json.dumps(config))


def test_load_model_refuses_a_model_that_is_not_a_causal_lm(tmp_path):
    write_not_causal_lm(tmp_path / "vit")
    with pytest.raises(ModelRejected) as info:
        load_model(tmp_path / "vit")
    assert info.value.reason == "not_causal_lm"


def test_load_model_dtype(tiny_model_dir):
    import torch

    model, tokenizer = load_model(tiny_model_dir, dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16 and not model.training
    assert tokenizer.eos_token_id is not None
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model(tiny_model_dir, dtype="int3")
