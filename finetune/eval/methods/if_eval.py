"""IF-eval: answers to two questions under shared rules, scored by the rules they break.

Each response with ``c`` of ``n`` rules satisfied scores ``1 - (c / n) ** 2`` and counts ``n``
times, so samples with more rules weigh more. A model that gives (nearly) the same answer to
both questions of too many samples ignores the question and gets the worst score, 1.

The prompt wording, the rule checks and the near-duplicate test follow the protocol's
`EvalRules.ifeval` rule set (`finetune.eval.ifeval_rules`).
"""

from __future__ import annotations

from collections.abc import Sequence

from finetune.competition import EvalTaskSpec
from finetune.datasets.samples import IfEvalRule, IfEvalSample
from finetune.eval.ifeval_rules import build_prompt, count_satisfied, near_duplicates
from finetune.eval.methods.base import check_samples, generation_of, generation_request
from finetune.eval.prompting import PromptContext, Tokenizer, decode, prompt_ids
from finetune.eval.requests import Engine, GenerationRequest, GenerationResult, ProgressCallback

MAX_DUPLICATE_FRACTION = 0.1  # more samples than this with near-duplicates -> raw = 1

QuestionRules = tuple[tuple[IfEvalRule, ...], tuple[IfEvalRule, ...]]


def question_rules(sample: IfEvalSample) -> QuestionRules:
    """The rules each of the sample's two questions is asked and checked under, in order.

    A sample's rules are shared by both questions, but a keyword rule names each question's
    own keyword (drawn from that question's answer), so each gets its concrete rule.
    """
    return tuple(r.for_question(0) for r in sample.rules), tuple(r.for_question(1) for r in sample.rules)


def build_requests(
    samples: Sequence[IfEvalSample], spec: EvalTaskSpec, ctx: PromptContext
) -> list[GenerationRequest]:
    """Two requests per sample, in order: (sample 0, q0), (sample 0, q1), (sample 1, q0), ...

    Ours cuts a long prompt to leave room for the answer; the reference never cuts them.
    """
    generation = generation_of(spec)
    rule_set = ctx.rules.ifeval
    return [
        generation_request(
            prompt_ids(
                ctx,
                build_prompt(question, rules, rule_set=rule_set),
                reserve=generation.max_new_tokens,
                cut=False,
            ),
            generation,
            ctx,
        )
        for s in samples
        for question, rules in zip(s.questions, question_rules(s), strict=True)
    ]


def response_score(satisfied: int, n_rules: int) -> float:
    """``1 - (c / n) ** 2``: 0 when every rule holds, 1 when none does."""
    return 1.0 - (satisfied / n_rules) ** 2


def score_responses(
    samples: Sequence[IfEvalSample],
    responses: Sequence[tuple[str, str]],
    *,
    rule_set: str = "ours",
) -> float:
    """Raw IF-eval score of decoded responses, one pair per sample (lower is better)."""
    return score_pairs([question_rules(s) for s in samples], responses, rule_set=rule_set)


def score_pairs(
    rules: Sequence[QuestionRules],
    responses: Sequence[tuple[str, str]],
    *,
    rule_set: str = "ours",
) -> float:
    """Raw IF-eval score from each sample's per-question rules and its two responses.

    The mean of every response's score repeated once per rule of its sample; samples without
    rules count for nothing; 1 for no samples or too many near-duplicate pairs.
    """
    if not rules:
        return 1.0
    duplicated = sum(near_duplicates(a, b, rule_set=rule_set) for a, b in responses)
    if duplicated > MAX_DUPLICATE_FRACTION * len(rules):
        return 1.0
    scores: list[float] = []
    for sample_rules, pair in zip(rules, responses, strict=True):
        for own, response in zip(sample_rules, pair, strict=True):
            if own:
                score = response_score(count_satisfied(own, response, rule_set=rule_set), len(own))
                scores.extend([score] * len(own))
    # A plain sum of the repeated scores, in order: the reference's arithmetic to the last bit.
    return sum(scores) / len(scores) if scores else 1.0


def decode_pairs(
    results: Sequence[GenerationResult], tokenizer: Tokenizer
) -> list[tuple[str, str]]:
    """Flat results (two per sample) back to one decoded pair per sample."""
    texts = [decode(tokenizer, r.token_ids) for r in results]
    return list(zip(texts[0::2], texts[1::2], strict=True))


def run(
    engine: Engine,
    samples: Sequence[IfEvalSample],
    spec: EvalTaskSpec,
    ctx: PromptContext,
    progress: ProgressCallback | None = None,
) -> float:
    """Raw score of IF_EVAL."""
    check_samples(samples, IfEvalSample, spec)
    results = engine.generate(build_requests(samples, spec, ctx), progress)
    return score_responses(samples, decode_pairs(results, ctx.tokenizer), rule_set=ctx.rules.ifeval)
