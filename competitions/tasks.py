"""Eval task definitions (SPEC §4, §7). Each builder takes the task's weight, because the same
task appears in several competitions with different weights; everything else is fixed here.

Sample counts, generation limits and normalisation are data: the engine and the loaders read
them from the spec and never special-case a task name.
"""

from __future__ import annotations

from finetune.competition import (
    EvalTaskSpec,
    GenerationSpec,
    Method,
    Normalization,
    NormKind,
)

# Greedy decoding limits of the reference (SPEC §7). Fixed token limits, never wall-clock ones.
MULTIPLE_CHOICE_GENERATION = GenerationSpec(max_new_tokens=20, repetition_penalty=1.1)
IF_EVAL_GENERATION = GenerationSpec(max_new_tokens=200, repetition_penalty=1.2)
# FINEWEB's degeneracy gate: 20 greedy tokens from each of two prompts (SPEC §7).
DEGENERACY_GATE_GENERATION = GenerationSpec(max_new_tokens=20)
# Short answers: BoolQ is one word, MAWPS one number; room for a few words around them.
BOOLQ_GENERATION = GenerationSpec(max_new_tokens=10)
MAWPS_GENERATION = GenerationSpec(max_new_tokens=40)

# Page draws of protocol reference-3.1 (the reference's dataset_kwargs, constants l.316-331,
# and FineWeb's loader defaults). Only reference draws read them: salted draws fetch pages of
# 100 rows until they hold `samples`. The real server sends at most 100 rows whatever the stride.
SFT_REFERENCE_PAGES = {"rows_per_page": 150, "pages": 1}  # then fetch-more rounds up to 120
CODEFORCES_REFERENCE_PAGES = {"rows_per_page": 120, "pages": 1, "max_estimated_tokens": 16_384}
FINEWEB_REFERENCE_PAGES = {"rows_per_page": 100, "pages": 4}


def synthetic_mmlu(weight: float, *, samples: int = 700, min_samples: int = 50) -> EvalTaskSpec:
    """Multiple choice on SN1-generated MMLU-like questions; raw = fraction incorrect."""
    return EvalTaskSpec(
        name="SYNTHETIC_MMLU",
        method=Method.MULTIPLE_CHOICE,
        dataset="synthetic_mmlu",
        weight=weight,
        samples=samples,
        min_samples=min_samples,  # fewer available -> the task is dropped for the round
        generation=MULTIPLE_CHOICE_GENERATION,
    )


def word_sorting(weight: float, *, samples: int = 400) -> EvalTaskSpec:
    """Reference loss of the alphabetically sorted word list; normalised with ceiling 40."""
    return EvalTaskSpec(
        name="WORD_SORTING",
        method=Method.REFERENCE_LOSS,
        dataset="word_sorting",
        weight=weight,
        normalization=Normalization(kind=NormKind.INVERSE_EXPONENTIAL, ceiling=40.0),
        samples=samples,
    )


def fineweb(weight: float, *, samples: int = 400) -> EvalTaskSpec:
    """Text loss on fineweb-edu documents behind the degeneracy gate; normalised, ceiling 20."""
    return EvalTaskSpec(
        name="FINEWEB",
        method=Method.TEXT_LOSS,
        dataset="fineweb",
        weight=weight,
        normalization=Normalization(kind=NormKind.INVERSE_EXPONENTIAL, ceiling=20.0),
        samples=samples,  # the reference: every row of its 4 pages, at most 400
        generation=DEGENERACY_GATE_GENERATION,
        dataset_options=dict(FINEWEB_REFERENCE_PAGES),
    )


def if_eval_v2(weight: float, *, samples: int = 100) -> EvalTaskSpec:
    """IF-eval with 2-5 rules per sample (V2 rule set). 100 samples = 200 generations a model."""
    return EvalTaskSpec(
        name="IF_EVAL_V2",
        method=Method.IF_EVAL,
        dataset="if_eval_v2",
        weight=weight,
        samples=samples,
        generation=IF_EVAL_GENERATION,
        version=2,  # 2: each question's keyword from its own answer; word counts and casing fixed
    )


def synthetic_1_sft(weight: float, *, samples: int = 120) -> EvalTaskSpec:
    """Reference loss on SYNTHETIC-1 reasoning traces (math and code output prediction)."""
    return EvalTaskSpec(
        name="SYNTHETIC_1_SFT",
        method=Method.REFERENCE_LOSS,
        dataset="synthetic_1_sft",
        weight=weight,
        samples=samples,  # reference draws: the target size of its fetch-more rounds
        dataset_options=dict(SFT_REFERENCE_PAGES),
    )


def codeforces_cots(weight: float, *, samples: int = 100) -> EvalTaskSpec:
    """Reference loss on Codeforces chains of thought; rows over the sequence length dropped."""
    return EvalTaskSpec(
        name="CODEFORCES_COTS",
        method=Method.REFERENCE_LOSS,
        dataset="codeforces_cots",
        weight=weight,
        samples=samples,  # an upper bound: long rows are dropped, so fewer may remain
        dataset_options=dict(CODEFORCES_REFERENCE_PAGES),  # reference: one page, <= 100 rows
    )


def synthetic_qa(weight: float, *, samples: int = 400) -> EvalTaskSpec:
    """SN9_MODEL's task: reference loss of answers to synthetic prompts (deprecated)."""
    return EvalTaskSpec(
        name="SYNTHETIC_QA",
        method=Method.REFERENCE_LOSS,
        dataset="synthetic_qa",
        weight=weight,
        samples=samples,
    )


def dyck_language(weight: float, *, samples: int = 400) -> EvalTaskSpec:
    """Reference loss of the missing closing brackets of a Dyck word (defined, not scheduled)."""
    return EvalTaskSpec(
        name="DYCK_LANGUAGE",
        method=Method.REFERENCE_LOSS,
        dataset="dyck",
        weight=weight,
        samples=samples,  # the reference's DyckLoader makes 100 (its first 100 are ours)
    )


def boolq(weight: float, *, samples: int = 200) -> EvalTaskSpec:
    """Yes/no reading comprehension; raw = fraction of wrong answers."""
    return EvalTaskSpec(
        name="BOOLQ",
        method=Method.EXACT_ANSWER,
        dataset="boolq",
        weight=weight,
        samples=samples,
        generation=BOOLQ_GENERATION,
    )


def mawps(weight: float, *, samples: int = 200) -> EvalTaskSpec:
    """Math word problems with a numeric answer; raw = fraction of wrong answers."""
    return EvalTaskSpec(
        name="MAWPS",
        method=Method.EXACT_ANSWER,
        dataset="mawps",
        weight=weight,
        samples=samples,
        generation=MAWPS_GENERATION,
    )


def held_out(weight: float, *, samples: int = 200) -> EvalTaskSpec:
    """Hidden-style held-out task: reference loss on one data set of a pool (Dyck completion,
    word sorting, question answering), drawn per round from the seed (SPEC §9)."""
    return EvalTaskSpec(
        name="HELD_OUT",
        method=Method.REFERENCE_LOSS,
        dataset="held_out",
        weight=weight,
        samples=samples,
    )


__all__ = [
    "boolq",
    "codeforces_cots",
    "dyck_language",
    "fineweb",
    "held_out",
    "if_eval_v2",
    "mawps",
    "synthetic_1_sft",
    "synthetic_mmlu",
    "synthetic_qa",
    "word_sorting",
]
