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
from finetune.eval.fixed_tokenizer import FIXED_TOKENIZER_DIR_ENV, load_fixed_tokenizer
from finetune.eval.gpt4_tokenizer import build_gpt4_tokenizer
from finetune.eval.loading import load_model, load_tokenizer
from finetune.eval.methods import METHODS, EvalMethod, get_method
from finetune.eval.naive import NaiveEngine
from finetune.eval.prompting import PromptContext, prompt_context
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
    "FIXED_TOKENIZER_DIR_ENV",
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
    "build_gpt4_tokenizer",
    "default_engine",
    "evaluate_model",
    "get_method",
    "load_fixed_tokenizer",
    "load_model",
    "load_tokenizer",
    "prepare_task_data",
    "prompt_context",
]
