"""Fine-tuning on CPU with the tiny model: it learns, keeps the best, honours the budget."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from safetensors import safe_open

from competitions import LOCAL_INSTRUCT, tasks
from finetune.datasets import DataConfig
from finetune.eval import evaluate_model, prepare_task_data
from finetune.eval.loading import load_tokenizer
from finetune.mining.sft_data import encode_pairs, task_pairs
from finetune.mining.train import TimeBudgetCallback, TrainOptions, train_model
from finetune.storage import is_allowed_file, model_dir_violations

# Word sorting only: the task the training data teaches, scored by reference loss.
WORD_SORTING = LOCAL_INSTRUCT.model_copy(update={"tasks": (tasks.word_sorting(1.0, samples=16),)})


@pytest.fixture(scope="module")
def task_data():
    return prepare_task_data(WORD_SORTING, seed=0, config=DataConfig(offline=True))


@pytest.fixture(scope="module")
def examples(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    pairs = task_pairs(["word_sorting"], seed=7, count=200, config=DataConfig(offline=True))
    return encode_pairs(tokenizer, pairs, max_length=WORD_SORTING.constraints.sequence_length)


def _mean(values) -> float:
    return sum(values) / len(values)


def test_training_lowers_the_loss_and_improves_the_local_score(
    tiny_model_dir, examples, task_data, tmp_path
):
    options = TrainOptions(
        out_dir=tmp_path / "run", max_steps=24, learning_rate=2e-3, warmup=0.0, batch_size=8,
        eval_every=12, logging_steps=1, save_every=100,
    )  # fmt: skip
    report = train_model(tiny_model_dir, WORD_SORTING, examples, task_data, options)

    assert report.steps == 24 and report.stop == "max_steps" and len(report.losses) == 24
    assert _mean(report.losses[-4:]) < _mean(report.losses[:4]) - 0.3
    assert [h["step"] for h in report.history] == [0, 12, 24]
    assert report.initial_score == report.history[0]["total"]
    assert report.best_score < report.initial_score - 0.01
    assert report.best_score == min(h["total"] for h in report.history)

    # out/best is what a validator would load: allowed files only, passing every check, and
    # scoring from disk exactly what was measured in memory.
    best = report.best_dir
    assert sorted(p.name for p in best.iterdir()) == sorted(
        p.name for p in best.iterdir() if is_allowed_file(p.name)
    )
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= {
        p.name for p in best.iterdir()
    }
    assert model_dir_violations(best, WORD_SORTING.constraints) == []
    assert evaluate_model(best, WORD_SORTING, task_data).total == pytest.approx(report.best_score, abs=1e-6)
    saved = json.loads((tmp_path / "run" / "best.json").read_text())
    assert saved["score"] == report.best_score and saved["step"] == report.best_step
    assert saved["initial_score"] == report.initial_score
    assert saved["evaluation"]["tasks"]["WORD_SORTING"]["samples"] == 16
    assert saved["train_loss_last"] < saved["train_loss_first"]


def test_lora_adapters_are_merged_into_plain_weights(tiny_model_dir, examples, task_data, tmp_path):
    options = TrainOptions(
        out_dir=tmp_path / "lora", max_steps=6, learning_rate=1e-2, warmup=0.0, batch_size=8,
        eval_every=3, logging_steps=1, lora=True, lora_r=4, lora_alpha=8,
    )  # fmt: skip
    report = train_model(tiny_model_dir, WORD_SORTING, examples, task_data, options)

    assert report.best_score < report.initial_score
    with safe_open(str(report.best_dir / "model.safetensors"), framework="pt") as weights:
        names = list(weights.keys())
    with safe_open(str(Path(tiny_model_dir) / "model.safetensors"), framework="pt") as base:
        assert sorted(names) == sorted(base.keys())  # no lora_A/lora_B, same layout as the base
    assert not (report.best_dir / "adapter_config.json").exists()
    assert model_dir_violations(report.best_dir, WORD_SORTING.constraints) == []
    assert evaluate_model(report.best_dir, WORD_SORTING, task_data).total == pytest.approx(
        report.best_score, abs=1e-4
    )


def test_budget_stops_cleanly_and_resume_continues(tiny_model_dir, examples, task_data, tmp_path):
    out = tmp_path / "budget"
    options = TrainOptions(
        out_dir=out, max_steps=3, max_hours=0.0, learning_rate=1e-3, batch_size=4, eval_every=0,
        save_every=100,
    )  # fmt: skip
    stopped = train_model(tiny_model_dir, WORD_SORTING, examples, task_data, options)
    assert stopped.stop == "budget" and stopped.steps == 1
    assert (out / "checkpoints" / "checkpoint-1").is_dir()  # saved on the way out
    assert (out / "best" / "model.safetensors").is_file()
    spent = json.loads((out / "budget.json").read_text())["spent_s"]
    assert spent > 0

    resumed = train_model(
        tiny_model_dir, WORD_SORTING, examples, task_data,
        TrainOptions(out_dir=out, max_steps=3, max_hours=1.0, batch_size=4, eval_every=0,
                     save_every=100, resume=True),
    )  # fmt: skip
    assert resumed.stop == "max_steps" and resumed.steps == 3
    assert json.loads((out / "budget.json").read_text())["spent_s"] > spent
    # The best of both runs is kept: a resumed run only replaces a better score.
    assert resumed.best_score <= stopped.best_score


def test_time_budget_counts_earlier_runs():
    now = [100.0]
    callback = TimeBudgetCallback(60.0, spent_before=50.0, clock=lambda: now[0])
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    state = SimpleNamespace(global_step=1)
    callback.on_train_begin(None, state, control)
    now[0] += 9.0
    callback.on_step_end(None, state, control)
    assert not control.should_training_stop and callback.spent() == pytest.approx(59.0)
    now[0] += 1.0
    callback.on_step_end(None, state, control)
    assert control.should_training_stop and control.should_save and callback.stopped


def test_best_weights_keep_tied_embeddings_as_one_tensor(tmp_path):
    # Trained in fp32, saved in bf16: the cast must not split the tied output head from the
    # embeddings, or the header parameter count (the validator's size check) grows by a vocab matrix.
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from finetune.mining.train import BestKeeper

    config = LlamaConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=64, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    tokenizer = SimpleNamespace(save_pretrained=lambda path: None)
    BestKeeper(tmp_path, tokenizer, torch.bfloat16).save_full(model)

    with safe_open(str(tmp_path / "best" / "model.safetensors"), framework="pt") as weights:
        names = set(weights.keys())
        assert weights.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16
        count = sum(torch.Size(weights.get_slice(n).get_shape()).numel() for n in names)
    assert "lm_head.weight" not in names
    assert count == model.num_parameters()


def _fake_evaluation(total: float):
    from finetune.eval import ModelEvaluation

    return ModelEvaluation(competition="WORD_SORTING", seed=0, tasks={}, total=total)


def test_resume_after_a_crash_keeps_the_earlier_best_and_the_time_spent(
    tiny_model_dir, examples, task_data, tmp_path, monkeypatch
):
    import torch

    import finetune.mining.train as train

    out = tmp_path / "crash"
    seen: dict[int, dict[str, torch.Tensor]] = {}
    scores = iter([5.0, 1.0, 3.0, "crash", 3.0, 4.0, 4.0])  # steps 0, 1, 2, 3 | 2, 3, 4

    def fake_scorer(*args, **kwargs):
        def score(model):
            value = next(scores)
            if value == "crash":
                raise RuntimeError("simulated crash")
            seen[len(seen)] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return _fake_evaluation(value)

        return score

    monkeypatch.setattr(train, "scorer", fake_scorer)
    options = dict(max_steps=4, learning_rate=1e-2, warmup=0.0, batch_size=4, eval_every=1, save_every=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_model(tiny_model_dir, WORD_SORTING, examples, task_data, TrainOptions(out_dir=out, **options))
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    spent = json.loads((out / "budget.json").read_text())["spent_s"]
    assert spent > 0  # the crashed run's time still counts

    resumed = train_model(
        tiny_model_dir, WORD_SORTING, examples, task_data, TrainOptions(out_dir=out, resume=True, **options)
    )
    assert resumed.steps == 4
    assert (resumed.best_score, resumed.best_step) == (1.0, 1)
    assert json.loads((out / "best.json").read_text())["score"] == 1.0
    assert json.loads((out / "budget.json").read_text())["spent_s"] > spent
    with safe_open(str(out / "best" / "model.safetensors"), framework="pt") as weights:
        name = "model.layers.0.mlp.up_proj.weight"
        saved = weights.get_tensor(name)
        assert torch.equal(saved, seen[1][name].to(saved.dtype))  # the step-1 weights


def test_budget_stop_is_agreed_by_every_rank(monkeypatch):
    # This rank is within budget, another is not: both must stop at this step, or the one still
    # training waits forever at its next collective.
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda value, op=None: value.fill_(1.0))
    now = [0.0]
    callback = TimeBudgetCallback(60.0, clock=lambda: now[0])
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    state = SimpleNamespace(global_step=3, is_world_process_zero=False)
    callback.on_train_begin(None, state, control)
    now[0] += 1.0
    callback.on_step_end(SimpleNamespace(device="cpu"), state, control)
    assert control.should_training_stop and control.should_save and callback.stopped
