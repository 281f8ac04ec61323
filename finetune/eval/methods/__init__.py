"""Eval methods, registered by `finetune.competition.Method` (SPEC §7).

Each method turns samples into engine requests and the engine's results into a raw score
(lower is better), or raises `TaskFailed` saying why there is none. Each step is a pure
function in the method's module.
"""

from __future__ import annotations

from finetune.competition import Method
from finetune.datasets.samples import (
    ExactAnswerSample,
    IfEvalSample,
    MultipleChoiceSample,
    ReferenceSample,
    TextSample,
)
from finetune.errors import UnknownIdError
from finetune.eval.methods import (
    exact_answer,
    if_eval,
    multiple_choice,
    reference_loss,
    text_loss,
)
from finetune.eval.methods.base import EvalMethod, TaskFailed

METHODS: dict[Method, EvalMethod] = {
    Method.MULTIPLE_CHOICE: EvalMethod(multiple_choice.run_generation, MultipleChoiceSample),
    Method.MULTIPLE_CHOICE_LOGLIK: EvalMethod(multiple_choice.run_loglik, MultipleChoiceSample),
    Method.REFERENCE_LOSS: EvalMethod(reference_loss.run, ReferenceSample),
    # Two gate generations, then one loss request per document.
    Method.TEXT_LOSS: EvalMethod(text_loss.run, TextSample, lambda n: n + 2),
    # Two questions per sample.
    Method.IF_EVAL: EvalMethod(if_eval.run, IfEvalSample, lambda n: 2 * n),
    Method.EXACT_ANSWER: EvalMethod(exact_answer.run, ExactAnswerSample),
}


def get_method(method: Method | str) -> EvalMethod:
    """The registered implementation of `method`.

    Raises:
        UnknownIdError: no method of that id; the message lists the known ones.
    """
    try:
        return METHODS[Method(method)]
    except (ValueError, KeyError):
        known = ", ".join(m.value for m in METHODS)
        raise UnknownIdError(f"unknown eval method {method!r}; known: {known}") from None


__all__ = ["METHODS", "EvalMethod", "TaskFailed", "get_method"]
