"""Data for the eval tasks: loaders found by id, the sample records they return, their config.

`load_task_samples(dataset, seed=..., count=..., rules=...)` is the one entry point; rows come
from a local override file, the small samples bundled with the package (offline) or the
Hugging Face datasets-server, and pure shaping functions turn each row into a sample record.
`rules` (a protocol's `DataRules`) says how rows are drawn: salted per loader (protocol `next`,
`loaders`) or exactly as the reference validator draws them (`reference-3.1`,
`reference_loaders` with `reference_pages`, `reference_shapers`, `reference_generated`).
"""

from finetune.datasets.config import DataConfig
from finetune.datasets.http import DatasetsServerClient, Reply, RowsPage, SplitSize
from finetune.datasets.reference_shapers import REFERENCE_SYSTEM_PROMPT
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
    "REFERENCE_SYSTEM_PROMPT",
    "DataConfig",
    "DatasetsServerClient",
    "ExactAnswerSample",
    "IfEvalRule",
    "IfEvalSample",
    "MultipleChoiceSample",
    "ReferenceSample",
    "Reply",
    "RowsPage",
    "Sample",
    "SplitSize",
    "TextSample",
    "known_datasets",
    "load_task_samples",
]
