"""Data for the eval tasks: loaders found by id, the sample records they return, their config.

`load_task_samples(dataset, seed=..., count=...)` is the one entry point; rows come from a
local override file, the small samples bundled with the package (offline) or the Hugging Face
datasets-server, and pure shaping functions turn each row into a sample record.
"""

from finetune.datasets.config import DataConfig
from finetune.datasets.http import DatasetsServerClient, RowsPage, SplitSize
from finetune.datasets.registry import known_datasets, load_task_samples
from finetune.datasets.samples import (
    ExactAnswerSample,
    IfEvalRule,
    IfEvalSample,
    MultipleChoiceSample,
    ReferenceSample,
    Sample,
    TextSample,
)
from finetune.datasets.shapers import MMLU_EXAMPLE_PREFIX, REASONING_SYSTEM_PROMPT

__all__ = [
    "MMLU_EXAMPLE_PREFIX",
    "REASONING_SYSTEM_PROMPT",
    "DataConfig",
    "DatasetsServerClient",
    "ExactAnswerSample",
    "IfEvalRule",
    "IfEvalSample",
    "MultipleChoiceSample",
    "ReferenceSample",
    "RowsPage",
    "Sample",
    "SplitSize",
    "TextSample",
    "known_datasets",
    "load_task_samples",
]
