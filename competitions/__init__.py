"""Competition definitions and the schedules (SPEC §4, §9): data, plus lookups by name or id.

Only the orchestration layer (finetune.validator, finetune.mining), scripts and neurons import
this package; everything below receives a `Competition` as an argument.
"""

from competitions.definitions import (
    B7_MULTICHOICE,
    DISTILLED_REASONING_3B,
    EFFICIENT_1GPU_1DAY,
    GPT4_TOKENIZER,
    INSTRUCT_8B,
    INSTRUCT_8B_V2,
    MERGE_GENERALIST,
    SN9_MODEL,
)
from competitions.local import LOCAL_EFFICIENT, LOCAL_INSTRUCT, LOCAL_MERGING, LOCAL_REASONING
from competitions.render import render_markdown
from competitions.schedule import (
    ALL_COMPETITIONS,
    INSTRUCT_ONLY_BLOCK,
    LOCAL_SCHEDULE,
    REASONING_BLOCK,
    SCHEDULE,
    SCHEDULES,
    SEEDS_LOCAL_SCHEDULE,
    active_competitions,
    get_competition,
    get_schedule,
    protocol_for,
)
from competitions.tasks import dyck_language

__all__ = [
    "ALL_COMPETITIONS",
    "B7_MULTICHOICE",
    "DISTILLED_REASONING_3B",
    "EFFICIENT_1GPU_1DAY",
    "GPT4_TOKENIZER",
    "INSTRUCT_8B",
    "INSTRUCT_8B_V2",
    "INSTRUCT_ONLY_BLOCK",
    "LOCAL_EFFICIENT",
    "LOCAL_INSTRUCT",
    "LOCAL_MERGING",
    "LOCAL_REASONING",
    "LOCAL_SCHEDULE",
    "MERGE_GENERALIST",
    "REASONING_BLOCK",
    "SCHEDULE",
    "SCHEDULES",
    "SEEDS_LOCAL_SCHEDULE",
    "SN9_MODEL",
    "active_competitions",
    "dyck_language",
    "get_competition",
    "get_schedule",
    "protocol_for",
    "render_markdown",
]
