"""Pure scoring maths (SPEC §5, §6, §9): aggregation, epsilon, wins, weights, retry, seeds.

No torch, bittensor or huggingface_hub: plain numbers in, plain numbers out.
"""

from finetune.scoring.aggregate import aggregate_score, effective_weights, normalised_scores
from finetune.scoring.epsilon import epsilon
from finetune.scoring.helm import helm_failed, helm_scores, task_win_rates
from finetune.scoring.history import EvalRecord, append_record, should_retry
from finetune.scoring.seed import fallback_seed, sync_window_start, window_seed
from finetune.scoring.weights import (
    apply_threshold,
    ema_update,
    models_to_keep,
    normalise,
    step_weights,
    subnet_weights,
)
from finetune.scoring.wins import adjusted_score, compute_wins, is_win

__all__ = [
    "EvalRecord",
    "adjusted_score",
    "aggregate_score",
    "append_record",
    "apply_threshold",
    "compute_wins",
    "effective_weights",
    "ema_update",
    "epsilon",
    "fallback_seed",
    "helm_failed",
    "helm_scores",
    "is_win",
    "models_to_keep",
    "normalise",
    "normalised_scores",
    "should_retry",
    "step_weights",
    "subnet_weights",
    "sync_window_start",
    "task_win_rates",
    "window_seed",
]
