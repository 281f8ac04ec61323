"""Scoring models: requests and engines, eval methods, model loading, `evaluate_model`.

One code path serves the validator, the miner and ``scripts/evaluate_model.py``:
`prepare_task_data` loads a round's samples, `evaluate_model` scores one model on them.
"""

from finetune.eval.engine import BatchedEngine
from finetune.eval.evaluate import (
    ModelEvaluation,
    TaskData,
    TaskProgress,
    TaskScore,
    default_engine,
    evaluate_model,
    prepare_task_data,
)
from finetune.eval.loading import load_model
from finetune.eval.methods import METHODS, EvalMethod, get_method
from finetune.eval.naive import NaiveEngine
from finetune.eval.prompting import PromptContext
from finetune.eval.requests import (
    ChoiceRequest,
    ChoiceResult,
    Engine,
    GenerationRequest,
    GenerationResult,
    LossRequest,
    LossResult,
    ProgressCallback,
)

__all__ = [
    "METHODS",
    "BatchedEngine",
    "ChoiceRequest",
    "ChoiceResult",
    "Engine",
    "EvalMethod",
    "GenerationRequest",
    "GenerationResult",
    "LossRequest",
    "LossResult",
    "ModelEvaluation",
    "NaiveEngine",
    "ProgressCallback",
    "PromptContext",
    "TaskData",
    "TaskProgress",
    "TaskScore",
    "default_engine",
    "evaluate_model",
    "get_method",
    "load_model",
    "prepare_task_data",
]
