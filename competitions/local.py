"""Competitions for the devnet, the demo and tests: the real tasks, sized for tiny CPU models.

They have their own ids (101 to 104) so a devnet commitment can never be mistaken for a mainnet
one. Sample counts are small enough that a round over a few tiny models takes seconds on a CPU;
generation limits are the real ones, so the code paths are the mainnet ones.
"""

from __future__ import annotations

from competitions import tasks
from competitions.definitions import APPROVED_BASE_FAMILIES, OPEN_GENERATED_DATA
from competitions.experts import LOCAL_MERGING_LIST, RESEARCH_LICENSES
from finetune.competition import (
    Aggregation,
    Competition,
    EpsilonSpec,
    ModelConstraints,
    NormLimits,
    SubmissionRules,
)

MIB = 1024**2

# What finetune.tiny_model builds (two layers, hidden 64, ~0.2M parameters).
TINY_ARCHITECTURES = (
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "MistralForCausalLM",
    "Phi3ForCausalLM",
    "GPTNeoXForCausalLM",
)

_TINY_CONSTRAINTS = ModelConstraints(
    max_params=5_000_000,
    max_bytes=50 * MIB,
    sequence_length=512,
    allowed_architectures=TINY_ARCHITECTURES,
    tokenizer=None,
    load_dtype="float32",  # CPUs are slow and inexact in bfloat16
    eval_block_delay=2,  # a devnet block or two, so the delay path is exercised
    epsilon=EpsilonSpec(start=0.05, end=0.01, decay_blocks=100),
    norm_limits=NormLimits(),
)

LOCAL_INSTRUCT = Competition(
    id=101,
    name="LOCAL_INSTRUCT",
    constraints=_TINY_CONSTRAINTS,
    tasks=(
        tasks.synthetic_mmlu(0.75, samples=8, min_samples=4),
        tasks.word_sorting(0.05, samples=8),
        tasks.fineweb(0.10, samples=8),
        tasks.if_eval_v2(0.10, samples=4),
    ),
)

LOCAL_REASONING = Competition(
    id=102,
    name="LOCAL_REASONING",
    constraints=_TINY_CONSTRAINTS,
    tasks=(tasks.synthetic_1_sft(0.5, samples=6), tasks.codeforces_cots(0.5, samples=6)),
)

# The seeds' two competitions (SPEC §9) on tiny models, ranked the HELM way under protocol
# `seeds-helm` (the `seeds-local` schedule). Budgets are minutes, not a day or an hour: a CPU
# trains or merges a tiny model in seconds. No age advantage (HELM ranking).
_NO_EPSILON = EpsilonSpec(start=0.0, end=0.0, decay_blocks=1)
LOCAL_BUDGET_HOURS = 0.25
# Loader ids a tiny recipe may train on (rule-generated or bundled open samples).
LOCAL_OPEN_DATA = (*OPEN_GENERATED_DATA, "synthetic_mmlu", "boolq", "mawps")

LOCAL_EFFICIENT = Competition(
    id=103,
    name="LOCAL_EFFICIENT",
    constraints=_TINY_CONSTRAINTS.model_copy(update={
        "epsilon": _NO_EPSILON,
        "approved_families": APPROVED_BASE_FAMILIES,
        "submission": SubmissionRules(kind="recipe", max_hours=LOCAL_BUDGET_HOURS, open_data=LOCAL_OPEN_DATA),
    }),
    # Loss tasks give every tiny model a distinct raw score, so the per-task win rates differ.
    tasks=(
        tasks.dyck_language(0.4, samples=8),
        tasks.word_sorting(0.3, samples=8),
        tasks.synthetic_mmlu(0.3, samples=8, min_samples=4),
    ),
    aggregation=Aggregation.HELM,
)

LOCAL_MERGING = Competition(
    id=104,
    name="LOCAL_MERGING",
    constraints=_TINY_CONSTRAINTS.model_copy(update={
        "epsilon": _NO_EPSILON,
        "submission": SubmissionRules(kind="merge", max_hours=LOCAL_BUDGET_HOURS,
                                      max_memory_bytes=4 * 1024 * MIB, licenses=RESEARCH_LICENSES,
                                      experts=LOCAL_MERGING_LIST),
    }),
    tasks=(
        tasks.boolq(0.35, samples=8),
        tasks.mawps(0.35, samples=8),
        tasks.held_out(0.3, samples=8),
    ),
    aggregation=Aggregation.HELM,
)

__all__ = [
    "LOCAL_BUDGET_HOURS",
    "LOCAL_EFFICIENT",
    "LOCAL_INSTRUCT",
    "LOCAL_MERGING",
    "LOCAL_OPEN_DATA",
    "LOCAL_REASONING",
    "TINY_ARCHITECTURES",
]
