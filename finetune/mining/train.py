"""Supervised fine-tuning under a wall-clock budget, scored by the validator's own code.

`train_model` runs a transformers `Trainer` on masked (prompt, response) sequences (see
`sft_data`), optionally through PEFT LoRA adapters, with three callbacks (and, with
``progress``, a `TrainingProgress` bar against the time budget):

- `TimeBudgetCallback` stops cleanly (checkpoint saved) once the budget is spent; the time
  spent is kept in ``out/budget.json`` (updated every step, so a crash keeps it too) and a
  resumed run continues the same budget. Under data parallelism every rank stops together.
- `ScoreCallback` scores the in-memory model with `finetune.eval.evaluate_model` on one fixed
  set of task data, before training, every ``eval_every`` steps and at the end.
- `BestKeeper` (driven by it) keeps the best-scoring weights: full weights in ``out/best``;
  for LoRA the adapter in ``out/best_adapter``, merged into the weights at the end. Each new
  best also updates ``out/best.json``, so a resumed run never replaces it with a worse one.

The result is ``out/best`` (safetensors in the competition's dtype, config, generation config,
tokenizer) and ``out/best.json``. Checkpoints for ``--resume`` live in ``out/checkpoints``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from finetune.competition import Competition
from finetune.eval import ModelEvaluation, TaskData, evaluate_model
from finetune.eval.loading import load_model, resolve_dtype
from finetune.mining.sft_data import EncodedExample, SftCollator, SftDataset
from finetune.mining.train_progress import TrainingProgress
from finetune.protocol import NEXT, EvalRules

logger = logging.getLogger(__name__)

BUDGET_FILE = "budget.json"
BEST_FILE = "best.json"


@dataclass(frozen=True)
class TrainOptions:
    """How to train. Step counts are optimiser steps; ``max_steps=None`` trains `epochs`."""

    out_dir: Path
    max_hours: float = 24.0
    max_steps: int | None = None
    epochs: float = 1.0
    learning_rate: float = 2e-5
    warmup: float = 0.03
    batch_size: int = 4
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    eval_every: int = 200
    save_every: int = 500
    logging_steps: int = 10
    resume: bool = False
    device: str = "cpu"
    batch_tokens: int = 8192
    seed: int = 42
    progress: bool = False  # a progress bar on stderr, when it is a terminal


@dataclass(frozen=True)
class TrainReport:
    """What a run did. Scores are the validator's totals (lower is better)."""

    best_dir: Path
    best_step: int
    best_score: float
    initial_score: float
    steps: int
    losses: tuple[float, ...]  # logged training losses, in order
    stop: str  # "budget", "max_steps" or "completed"
    elapsed_s: float
    history: tuple[dict[str, float], ...] = field(default=())


# --- callbacks -------------------------------------------------------------------------------


class TimeBudgetCallback(TrainerCallback):
    """Stops training (and asks for a checkpoint) once `max_seconds` of wall clock are spent.

    Args:
        max_seconds: the whole budget.
        spent_before: seconds already spent by earlier runs of the same training.
        clock: monotonic clock, for tests.
        record: file that keeps the time spent (``{"spent_s": ...}``), rewritten every step by
            the main process, so a run that crashes still counts against the budget.
    """

    def __init__(
        self,
        max_seconds: float,
        *,
        spent_before: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        record: Path | None = None,
    ) -> None:
        self.max_seconds = max_seconds
        self.spent_before = spent_before
        self._clock = clock
        self.record = record
        self._start: float | None = None
        self.stopped = False

    def spent(self) -> float:
        """Seconds spent so far, earlier runs included."""
        running = 0.0 if self._start is None else self._clock() - self._start
        return self.spent_before + running

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = self._clock()

    def save(self) -> None:
        """Write the time spent so far to `record` (atomically; no-op without one)."""
        if self.record is not None:
            _write_json(self.record, {"spent_s": self.spent()})

    def on_step_end(self, args, state, control, **kwargs):
        if getattr(state, "is_world_process_zero", True):
            self.save()
        # Every rank must take the same decision, or the ranks still training wait forever at
        # their next collective for the one that stopped (their clocks differ slightly).
        if _any_rank(self.spent() >= self.max_seconds, getattr(args, "device", "cpu")):
            logger.info("time budget of %.2f h reached at step %d", self.max_seconds / 3600, state.global_step)
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True
        return control


class BestKeeper:
    """Keeps the weights with the lowest score so far on disk.

    Args:
        out_dir: holds ``best/`` (full fine-tuning) or ``best_adapter/`` (LoRA).
        tokenizer: saved beside the weights.
        save_dtype: dtype of the saved weights (the competition's load dtype).
        best_score: the score to beat (from an earlier run when resuming).
    """

    def __init__(self, out_dir: Path, tokenizer: Any, save_dtype: torch.dtype, best_score: float = math.inf):
        self.out_dir = out_dir
        self.tokenizer = tokenizer
        self.save_dtype = save_dtype
        self.best_score = best_score
        self.best_step = -1
        self.best_evaluation: ModelEvaluation | None = None

    @property
    def best_dir(self) -> Path:
        return self.out_dir / "best"

    def offer(self, model: Any, step: int, evaluation: ModelEvaluation) -> bool:
        """Save `model` if `evaluation` beats the best so far; True if it did."""
        if not evaluation.total < self.best_score:
            return False
        self.best_score, self.best_step, self.best_evaluation = evaluation.total, step, evaluation
        if _is_peft(model):
            target = self.out_dir / "best_adapter"
            _replace_dir(target, lambda tmp: model.save_pretrained(tmp))
        else:
            self.save_full(model)
        # Written now, not only at the end: after a crash, `--resume` must know the score to beat.
        _write_json(
            self.out_dir / BEST_FILE, {"step": step, "score": evaluation.total, "evaluation": evaluation.to_json()}
        )
        logger.info("new best %.6g at step %d", evaluation.total, step)
        return True

    def save_full(self, model: Any) -> None:
        """Write `model` (a plain transformers model) to ``best/`` in the save dtype."""

        def write(tmp: Path) -> None:
            # Tied weights (embeddings = output head) must stay one tensor after the cast, or
            # both copies are written and the header parameter count the validator checks grows.
            cast: dict[tuple[int, torch.dtype, tuple[int, ...]], torch.Tensor] = {}
            state = {}
            for name, tensor in model.state_dict().items():
                key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
                if key not in cast:
                    cast[key] = tensor.detach().to(self.save_dtype)
                state[name] = cast[key]
            model.save_pretrained(tmp, state_dict=state)
            self.tokenizer.save_pretrained(tmp)

        _replace_dir(self.best_dir, write)


class ScoreCallback(TrainerCallback):
    """Scores the model with the validator's code and offers each result to a `BestKeeper`."""

    def __init__(self, score: Callable[[Any], ModelEvaluation], keeper: BestKeeper, every: int):
        self.score = score
        self.keeper = keeper
        self.every = every
        self.history: list[dict[str, float]] = []
        self._last_step: int | None = None

    def _run(self, model: Any, state: Any) -> None:
        # Scored on the main process only; other ranks wait at their next collective.
        if not state.is_world_process_zero or self._last_step == state.global_step:
            return
        self._last_step = state.global_step
        evaluation = self.score(model)
        improved = self.keeper.offer(model, state.global_step, evaluation)
        self.history.append({"step": state.global_step, "total": evaluation.total})
        logger.info("step %d: local score %.6g%s", state.global_step, evaluation.total, " (best)" if improved else "")

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._run(model, state)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every > 0 and state.global_step % self.every == 0:
            self._run(model, state)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._run(model, state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Replaces transformers' PrinterCallback: training logs go through `logging`.
        if state.is_world_process_zero and logs and "loss" in logs:
            logger.info("step %d: loss %.4f lr %.3g", state.global_step, logs["loss"], logs.get("learning_rate", 0))


# --- helpers ---------------------------------------------------------------------------------


def _is_peft(model: Any) -> bool:
    return hasattr(model, "get_base_model") and hasattr(model, "peft_config")


def _replace_dir(target: Path, write: Callable[[Path], None]) -> None:
    """Write into a sibling temp folder, then swap it in: a crash never leaves half a model."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _any_rank(flag: bool, device: Any) -> bool:
    """`flag` or'ed over all ranks of the default process group (just `flag` without one)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def scorer(
    competition: Competition,
    task_data: TaskData,
    tokenizer: Any,
    *,
    batch_tokens: int,
    rules: EvalRules = NEXT.eval,
) -> Callable[[Any], ModelEvaluation]:
    """A function scoring an in-memory model exactly as `evaluate_model` scores a directory
    (under `rules`, the eval rules of the protocol the competition is scored under)."""

    def score(model: Any) -> ModelEvaluation:
        plain = model.get_base_model() if _is_peft(model) else model  # LoRA layers stay active
        device = next(plain.parameters()).device
        was_training = plain.training
        try:
            return evaluate_model(
                (plain, tokenizer), competition, task_data, device=str(device),
                batch_tokens=batch_tokens, rules=rules,
            )
        finally:
            plain.train(was_training)

    return score


def _training_args(options: TrainOptions, train_dtype: torch.dtype) -> Any:
    from transformers import TrainingArguments

    on_cpu = options.device == "cpu"
    return TrainingArguments(
        output_dir=str(options.out_dir / "checkpoints"),
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        num_train_epochs=options.epochs,
        max_steps=options.max_steps if options.max_steps is not None else -1,
        learning_rate=options.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=options.warmup,
        weight_decay=0.0,
        logging_steps=options.logging_steps,
        save_steps=options.save_every,
        save_total_limit=2,
        report_to="none",
        seed=options.seed,
        bf16=train_dtype == torch.bfloat16 and not on_cpu,
        use_cpu=on_cpu,
        # Only when asked: the flag's name changes in transformers 6 (activation_checkpointing).
        **({"gradient_checkpointing": True} if options.gradient_checkpointing else {}),
        remove_unused_columns=False,
        dataloader_pin_memory=not on_cpu,
        disable_tqdm=True,
    )


def _wrap_lora(model: Any, options: TrainOptions) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=0.05,
        target_modules="all-linear",  # every projection of every block; not the output head
    )
    return get_peft_model(model, config)


def _finish_lora(model: Any, keeper: BestKeeper) -> None:
    """Load the best adapter back into `model`, merge it into the weights, save ``best/``."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter = keeper.out_dir / "best_adapter" / "adapter_model.safetensors"
    if adapter.is_file():
        set_peft_model_state_dict(model, load_file(str(adapter)))
    keeper.save_full(model.merge_and_unload())


def _last_checkpoint(options: TrainOptions) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = options.out_dir / "checkpoints"
    if not options.resume or not folder.is_dir():
        return None
    found = get_last_checkpoint(str(folder))
    logger.info("resuming from %s", found) if found else logger.info("no checkpoint to resume from")
    return found


def train_model(
    model_dir: str | Path,
    competition: Competition,
    examples: Sequence[EncodedExample],
    task_data: TaskData,
    options: TrainOptions,
    *,
    tokenizer: Any | None = None,
    rules: EvalRules = NEXT.eval,
) -> TrainReport:
    """Fine-tune a causal LM and keep the weights the validator's code scores best.

    Args:
        model_dir: the base model (safetensors).
        competition: whose scoring, sequence length and dtype apply.
        examples: encoded training sequences (`sft_data.encode_pairs`).
        task_data: fixed eval data for local scoring (`prepare_task_data`).
        options: steps, budget, LoRA, evaluation and checkpoint settings.
        tokenizer: the tokenizer the examples were encoded with (default: the
            competition's, else the model's).
        rules: the eval rules the local scores follow: those of the protocol validators
            score the competition under (`competitions.protocol_for`).

    Returns:
        The report; the best model is in ``options.out_dir / "best"`` and described by
        ``best.json`` beside it.

    Raises:
        ModelRejected: the base model cannot be loaded.
        ValueError: no training examples.
    """
    from transformers import PrinterCallback, Trainer, set_seed

    if not examples:
        raise ValueError("no training examples")
    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    train_dtype = torch.float32 if options.device == "cpu" else torch.bfloat16
    model, own_tokenizer = load_model(
        model_dir, device="cpu", dtype=train_dtype, tokenizer=competition.constraints.tokenizer
    )
    tokenizer = tokenizer or own_tokenizer
    model.train()
    set_seed(options.seed)
    if options.lora:
        model = _wrap_lora(model, options)
    earlier = _read_json(out / BEST_FILE) if options.resume else {}
    keeper = BestKeeper(
        out, tokenizer, resolve_dtype(competition.constraints.load_dtype),
        best_score=float(earlier.get("score", math.inf)),
    )
    budget = TimeBudgetCallback(
        options.max_hours * 3600,
        spent_before=float(_read_json(out / BUDGET_FILE).get("spent_s", 0.0)) if options.resume else 0.0,
        record=out / BUDGET_FILE,
    )
    scoring = ScoreCallback(
        scorer(competition, task_data, tokenizer, batch_tokens=options.batch_tokens, rules=rules),
        keeper,
        options.eval_every,
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainer = Trainer(
        model=model,
        args=_training_args(options, train_dtype),
        train_dataset=SftDataset(examples),
        data_collator=SftCollator(int(pad)),
        processing_class=tokenizer,
        callbacks=[budget, scoring, *([TrainingProgress(budget)] if options.progress else [])],
    )
    trainer.remove_callback(PrinterCallback)
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=_last_checkpoint(options))
    main = trainer.is_world_process_zero()  # other ranks only trained: one writer per file
    if main:
        budget.save()
    if options.lora and main:
        _finish_lora(trainer.model, keeper)
    losses = tuple(float(e["loss"]) for e in trainer.state.log_history if "loss" in e)
    stop = "budget" if budget.stopped else ("max_steps" if options.max_steps else "completed")
    report = TrainReport(
        best_dir=keeper.best_dir,
        best_step=keeper.best_step if keeper.best_step >= 0 else int(earlier.get("step", 0)),
        best_score=keeper.best_score,
        initial_score=scoring.history[0]["total"] if scoring.history else math.nan,
        steps=trainer.state.global_step,
        losses=losses,
        stop=stop,
        elapsed_s=time.monotonic() - started,
        history=tuple(scoring.history),
    )
    if main:
        _write_report(out / BEST_FILE, report, keeper, competition, model_dir, options, earlier)
    return report


def _write_report(
    path: Path, report: TrainReport, keeper: BestKeeper, competition: Competition,
    model_dir: str | Path, options: TrainOptions, earlier: dict,
) -> None:
    data = {
        "competition": competition.name,
        "base_model": str(model_dir),
        "step": report.best_step,
        "score": report.best_score,
        "initial_score": report.initial_score,
        # A resumed run that never beat the earlier best keeps that best's evaluation.
        "evaluation": keeper.best_evaluation.to_json() if keeper.best_evaluation else earlier.get("evaluation"),
        "steps": report.steps,
        "stop": report.stop,
        "elapsed_s": report.elapsed_s,
        "train_loss_first": report.losses[0] if report.losses else None,
        "train_loss_last": report.losses[-1] if report.losses else None,
        "history": list(report.history),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
    }
    _write_json(path, data)


__all__ = [
    "BestKeeper",
    "ScoreCallback",
    "TimeBudgetCallback",
    "TrainOptions",
    "TrainReport",
    "scorer",
    "train_model",
]
