"""Agreement between validators: bf16 batched versus bf16 per-sample reference loss.

Two validators scoring the same model in bf16 differ by how their matmuls round: a padded
batch on one, a lone row on another (or another GPU). This measures how far apart that puts
them, on several models of the same shape: per sample and per model, the relative difference
between the batched engine and the naive one (both in bf16), and how often two models whose
fp32 scores are closer than the smallest epsilon (0.01) come out in a different order. Two
arithmetics are measured: ``fp32_logits`` (bf16 body, logits upcast: protocol `next`) and
``model_dtype`` (log-softmax in bf16 too: the reference's `CrossEntropyLoss` on bf16 logits).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from finetune.eval.engine import BatchedEngine
from finetune.eval.naive import NaiveEngine
from finetune.eval.requests import LossRequest

SMALLEST_EPSILON = 0.01


def _means(engine: Any, calls: Sequence[Sequence[LossRequest]]) -> list[list[float]]:
    return [[r.mean for r in engine.loss(list(requests))] for requests in calls]


def _score(task_means: list[list[float]]) -> float:
    """A model's score: the mean over tasks of each task's mean per-sample loss."""
    return sum(sum(m) / len(m) for m in task_means) / len(task_means)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def _swaps(first: Sequence[float], second: Sequence[float], fp32: Sequence[float]) -> dict:
    """Pairs closer than `SMALLEST_EPSILON` in fp32, and those `first` and `second` order apart."""
    close = [
        (i, j)
        for i, j in itertools.combinations(range(len(fp32)), 2)
        if _rel(fp32[i], min(fp32[i], fp32[j])) < SMALLEST_EPSILON
        and _rel(fp32[j], min(fp32[i], fp32[j])) < SMALLEST_EPSILON
    ]
    swapped = [(i, j) for i, j in close if (first[i] < first[j]) != (second[i] < second[j])]
    return {"close_pairs": len(close), "swapped": len(swapped),
            "swap_rate": len(swapped) / len(close) if close else None}


def bf16_agreement(
    load: Callable[[int], torch.nn.Module],
    models: int,
    calls: Sequence[Sequence[LossRequest]],
    *,
    device: torch.device,
    batch_tokens: int,
) -> dict:
    """Score `models` models on the reference-loss `calls` in fp32 and in bf16, both ways.

    Args:
        load: model index -> the fp32 model (on `device`); it is converted to bf16 here.
        models: how many models.
        calls: the reference-loss engine calls (one per task), identical for every model.
        device: where the models run.
        batch_tokens: the batched engine's budget.

    Returns:
        Per arithmetic (``fp32_logits``, ``model_dtype``): the largest and mean relative
        difference per sample and per model (batched vs per-sample, in bf16), the largest
        difference of either from fp32, and the order swaps among fp32-close pairs; plus the
        fp32 scores and the sample count.
    """
    fp32_scores: list[float] = []
    kinds = ("fp32_logits", "model_dtype")
    runs: dict[str, dict[str, list]] = {k: {"batched": [], "single": [], "sample_rel": []} for k in kinds}
    for index in range(models):
        model = load(index)
        # The fp32 order is the batched engine's: it matches the per-sample one to 1e-5
        # (the methods section checks it) at a fraction of the time.
        fp32_scores.append(_score(_means(BatchedEngine(model, device=device, batch_tokens=batch_tokens), calls)))
        model = model.to(torch.bfloat16)
        for kind, native in (("fp32_logits", False), ("model_dtype", True)):
            engine = BatchedEngine(
                model, device=device, batch_tokens=batch_tokens, loss_in_model_dtype=native
            )
            batched = _means(engine, calls)
            single = _means(NaiveEngine(model, device, loss_in_model_dtype=native), calls)
            runs[kind]["batched"].append(_score(batched))
            runs[kind]["single"].append(_score(single))
            runs[kind]["sample_rel"] += [
                _rel(b, s) for bt, st in zip(batched, single, strict=True)
                for b, s in zip(bt, st, strict=True)
            ]
        del model
    report: dict[str, Any] = {"models": models, "samples": sum(len(c) for c in calls),
                              "fp32_scores": fp32_scores}
    for kind, run in runs.items():
        model_rel = [_rel(b, s) for b, s in zip(run["batched"], run["single"], strict=True)]
        report[kind] = {
            "sample_rel_diff": {"max": max(run["sample_rel"]),
                                "mean": sum(run["sample_rel"]) / len(run["sample_rel"])},
            "model_rel_diff": {"max": max(model_rel), "mean": sum(model_rel) / len(model_rel)},
            "vs_fp32_rel_diff": max(
                max(_rel(b, f), _rel(s, f))
                for b, s, f in zip(run["batched"], run["single"], fp32_scores, strict=True)
            ),
            "swaps_batched_vs_single": _swaps(run["batched"], run["single"], fp32_scores),
            "swaps_batched_vs_fp32": _swaps(run["batched"], fp32_scores, fp32_scores),
            "swaps_single_vs_fp32": _swaps(run["single"], fp32_scores, fp32_scores),
            "bf16_scores": {"batched": run["batched"], "single": run["single"]},
        }
    return report


__all__ = ["SMALLEST_EPSILON", "bf16_agreement"]
