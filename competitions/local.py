"""Competitions for the devnet, the demo and tests: the real tasks, sized for tiny CPU models.

They have their own ids (101, 102) so a devnet commitment can never be mistaken for a mainnet
one. Sample counts are small enough that a round over a few tiny models takes seconds on a CPU;
generation limits are the real ones, so the code paths are the mainnet ones.
"""

from __future__ import annotations

from competitions import tasks
from finetune.competition import Competition, EpsilonSpec, ModelConstraints, NormLimits

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

__all__ = ["LOCAL_INSTRUCT", "LOCAL_REASONING", "TINY_ARCHITECTURES"]
