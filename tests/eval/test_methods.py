"""Eval methods as pure functions: requests built from samples, raw scores from crafted results."""

from __future__ import annotations

import dataclasses
import math

import pytest

from finetune.competition import EvalTaskSpec, GenerationSpec, Method
from finetune.datasets.samples import (
    ExactAnswerSample,
    IfEvalRule,
    IfEvalSample,
    MultipleChoiceSample,
    ReferenceSample,
    TextSample,
)
from finetune.errors import ConfigError, EvalFailed, UnknownIdError
from finetune.eval.ifeval_rules import count_satisfied
from finetune.eval.loading import load_tokenizer
from finetune.eval.methods import (
    METHODS,
    exact_answer,
    get_method,
    if_eval,
    multiple_choice,
    reference_loss,
    text_loss,
)
from finetune.eval.methods.base import TaskFailed, mean_of_means
from finetune.eval.prompting import (
    PromptContext,
    chat_text,
    document_ids,
    encode,
    prompt_context,
    prompt_ids,
    reference_ids,
    truncate_left,
)
from finetune.eval.requests import ChoiceResult, GenerationResult, LossResult
from finetune.protocol import NEXT, REFERENCE_31


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


@pytest.fixture
def ctx(tokenizer):
    return PromptContext(tokenizer=tokenizer, sequence_length=64, stop_ids=(tokenizer.eos_token_id,))


def spec(method: Method, **kw) -> EvalTaskSpec:
    return EvalTaskSpec(name="T", method=method, dataset="d", weight=1.0, samples=4, **kw)


class RecordingEngine:
    """Answers with canned results and records what it was asked."""

    def __init__(self, generations=(), losses=(), choices=()):
        self.generations, self.losses, self.choices = list(generations), list(losses), list(choices)
        self.calls: list[tuple[str, list]] = []

    def generate(self, requests, progress=None):
        self.calls.append(("generate", list(requests)))
        out, self.generations = self.generations[: len(requests)], self.generations[len(requests) :]
        return out

    def loss(self, requests, progress=None):
        self.calls.append(("loss", list(requests)))
        return self.losses[: len(requests)]

    def choice_logprobs(self, requests, progress=None):
        self.calls.append(("choice", list(requests)))
        return self.choices[: len(requests)]


def gen(tokenizer, text: str) -> GenerationResult:
    return GenerationResult(token_ids=tuple(encode(tokenizer, text)))


# --- prompting -------------------------------------------------------------------------------


def test_prompt_is_one_templated_user_turn_with_generation_prompt(ctx, tokenizer):
    ids = prompt_ids(ctx, "What is 2+2?", system="Be brief.")
    text = tokenizer.decode(list(ids))
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert list(ids).count(tokenizer.bos_token_id) == 3  # the template's own markers, no extra BOS


def test_long_prompt_is_cut_from_the_left_keeping_room_to_generate(ctx, tokenizer):
    long_question = "word " * 200 + "FINAL QUESTION?"
    full = encode(tokenizer, chat_text(tokenizer, long_question))
    ids = prompt_ids(ctx, long_question, reserve=20)
    assert len(ids) == 64 - 20
    assert ids == tuple(full[-44:])  # the end (question and assistant header) survives
    assert truncate_left([1, 2, 3], 0) == (3,)


def test_reference_ids_keep_the_reference_and_cut_the_context_from_the_left(ctx, tokenizer):
    ref = encode(tokenizer, "apple banana cherry")
    ids, start = reference_ids(ctx, "Sort: " + "cherry apple banana " * 50, "apple banana cherry")
    assert len(ids) == 64 and ids[start:] == tuple(ref)
    short_ids, short_start = reference_ids(ctx, "Sort: b a", "a b")
    assert short_ids[:short_start] == tuple(encode(tokenizer, chat_text(tokenizer, "Sort: b a")))


def test_reference_longer_than_the_sequence_is_cut_on_the_right(ctx, tokenizer):
    ref_text = "one two three " * 100
    ids, start = reference_ids(ctx, "q", ref_text)
    assert len(ids) == 64 and start == 1
    assert ids[1:] == tuple(encode(tokenizer, ref_text)[:63])


def test_documents_are_cut_on_the_right(ctx, tokenizer):
    text = "the quick brown fox " * 100
    assert document_ids(ctx, text) == tuple(tokenizer(text)["input_ids"][:64])


# --- multiple choice -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("(B) because", "B"), ("The answer is: C.", "C"), ("Because", None), ("AB, then D", "D"),
     ("a b c", None), ("\n\nA", "A")],
)
def test_first_choice(text, expected):
    assert multiple_choice.first_choice(text, ("A", "B", "C", "D")) == expected


def test_multiple_choice_generation_requests_and_score(ctx, tokenizer):
    samples = [MultipleChoiceSample(question=f"Q{i}? A) x B) y C) z D) w", answer=a)
               for i, a in enumerate("ABCD")]
    task = spec(Method.MULTIPLE_CHOICE, generation=GenerationSpec(max_new_tokens=20, repetition_penalty=1.1))
    requests = multiple_choice.build_generation_requests(samples, task, ctx)
    assert [r.max_new_tokens for r in requests] == [20] * 4
    assert all(r.repetition_penalty == 1.1 and r.stop_ids == ctx.stop_ids for r in requests)
    assert len(requests[0].prompt_ids) <= 64 - 20
    results = [gen(tokenizer, t) for t in ("A", "The answer is A", "C) z", "none")]
    assert multiple_choice.score_generations(samples, results, tokenizer) == 0.5
    engine = RecordingEngine(generations=results)
    assert multiple_choice.run_generation(engine, samples, task, ctx) == 0.5


def test_multiple_choice_needs_generation_settings(ctx):
    with pytest.raises(ConfigError, match="generation"):
        multiple_choice.build_generation_requests(
            [MultipleChoiceSample("q", "A")], spec(Method.MULTIPLE_CHOICE), ctx
        )


def test_loglik_requests_use_the_bare_letter_token(ctx, tokenizer):
    samples = [MultipleChoiceSample("Q? A) x B) y", "B", ("A", "B")),
               MultipleChoiceSample("Q? A) x B) y C) z D) w", "D")]
    requests = multiple_choice.build_choice_requests(samples, ctx)
    assert requests[0].choice_ids == tuple(tokenizer.encode(c, add_special_tokens=False)[0] for c in "AB")
    assert len(requests[1].choice_ids) == 4
    results = [ChoiceResult((-2.0, -1.0)), ChoiceResult((-1.0, -1.0, -3.0, -1.0))]  # tie -> A
    assert multiple_choice.score_choices(samples, results) == 0.5


# --- reference and text loss -----------------------------------------------------------------


def test_reference_loss_requests_and_score(ctx, tokenizer):
    samples = [ReferenceSample("Sort: b a", "a b"), ReferenceSample("Say hi", "hi", system="Be kind.")]
    requests = reference_loss.build_requests(samples, ctx)
    assert requests[0].token_ids[requests[0].score_from :] == tuple(encode(tokenizer, "a b"))
    assert requests[1].score_from == len(encode(tokenizer, chat_text(tokenizer, "Say hi", system="Be kind.")))
    results = [LossResult(sum_nll=6.0, n_tokens=3), LossResult(sum_nll=1.0, n_tokens=1)]
    assert reference_loss.score(results) == pytest.approx(1.5)  # mean of per-sample means


def test_non_finite_loss_makes_the_task_fail_and_says_why():
    with pytest.raises(TaskFailed, match=r"^non_finite_loss: the loss is NaN or inf on 2 of 3 samples$"):
        mean_of_means([LossResult(1.0, 1), LossResult(float("nan"), 2), LossResult(math.inf, 2)])
    with pytest.raises(TaskFailed, match=r"^no_samples: "):
        mean_of_means([])


@pytest.mark.parametrize(
    ("first", "second", "degenerate"),
    [
        (list(range(20)), list(range(100, 120)), False),
        (list(range(20)), list(range(9)) + list(range(100, 111)), False),  # 9 shared positions
        (list(range(20)), list(range(10)) + list(range(100, 110)), True),  # 10 shared positions
        ([7] * 11 + list(range(9)), [8] * 11 + list(range(100, 109)), True),  # both repeat
        ([7] * 11 + list(range(9)), list(range(100, 120)), False),  # only one repeats
        ([7] * 10 + list(range(10)), [8] * 10 + list(range(100, 110)), False),  # 10 is allowed
    ],
)
def test_degeneracy_gate(first, second, degenerate):
    assert text_loss.is_degenerate(first, second) is degenerate
    assert bool(text_loss.degeneracy(first, second)) is degenerate


def test_a_degenerate_gate_says_what_it_saw():
    agreeing = text_loss.degeneracy(list(range(20)), list(range(12)) + list(range(100, 108)))
    assert agreeing == "degenerate: 12 of 20 gate positions agree"
    looping = text_loss.degeneracy([7] * 14 + list(range(6)), [8] * 12 + list(range(100, 108)))
    assert looping == "degenerate: one token fills 14 and 12 of the 20 positions of the two gate continuations"


def test_text_loss_skips_the_loss_when_the_gate_fails(ctx):
    task = spec(Method.TEXT_LOSS)
    same = GenerationResult(tuple(range(20)))
    engine = RecordingEngine(generations=[same, same], losses=[LossResult(1.0, 1)])
    with pytest.raises(TaskFailed, match=r"^degenerate: 20 of 20 gate positions agree$"):
        text_loss.run(engine, [TextSample("hello world")], task, ctx)
    assert [kind for kind, _ in engine.calls] == ["generate"]
    gate = engine.calls[0][1]
    assert len(gate) == 2 and gate[0].prompt_ids != gate[1].prompt_ids
    assert all(r.max_new_tokens == 20 and r.stop_ids == () for r in gate)


def test_text_loss_scores_documents_from_their_second_token(ctx):
    task = spec(Method.TEXT_LOSS)
    gate = [GenerationResult(tuple(range(20))), GenerationResult(tuple(range(50, 70)))]
    engine = RecordingEngine(generations=gate, losses=[LossResult(4.0, 2), LossResult(9.0, 3)])
    samples = [TextSample("the cat sat"), TextSample("a dog ran far")]
    per_token = dataclasses.replace(ctx, rules=NEXT.eval.model_copy(update={"loss_unit": "token"}))
    assert text_loss.run(engine, samples, task, per_token) == pytest.approx(2.5)
    assert all(r.score_from == 1 for r in engine.calls[1][1])
    # Next's unit: bits per byte of each document's scored text (all but its first token).
    engine = RecordingEngine(generations=gate, losses=[LossResult(4.0, 2), LossResult(9.0, 3)])
    raw = text_loss.run(engine, samples, task, ctx)
    requests = engine.calls[1][1]
    assert [r.n_bytes for r in requests] == [
        len(ctx.tokenizer.decode(list(r.token_ids[1:]), skip_special_tokens=True).encode()) for r in requests
    ]
    assert all(0 < r.n_bytes <= len(s.text) for r, s in zip(requests, samples, strict=True))
    want = (4.0 / requests[0].n_bytes + 9.0 / requests[1].n_bytes) / 2 / math.log(2)
    assert raw == pytest.approx(want)


# --- IF-eval ---------------------------------------------------------------------------------


def test_if_eval_response_score():
    assert if_eval.response_score(0, 3) == 1.0
    assert if_eval.response_score(3, 3) == 0.0
    assert if_eval.response_score(1, 2) == pytest.approx(0.75)


def test_near_duplicates_ignore_whitespace():
    assert if_eval.near_duplicates("The sun is a star.", "The  sun is a star!")
    assert not if_eval.near_duplicates("Paris is in France.", "Whales are mammals, 42.")


def test_if_eval_near_duplicate_penalty():
    rules = (IfEvalRule(kind="all_lower"),)
    samples = [IfEvalSample(("q1", "q2"), rules) for _ in range(10)]
    distinct = [(f"answer number {i} about apples", f"zebra {i * 7} quantum") for i in range(10)]
    twice = [("same words here", "same words here!")] * 2 + distinct[2:]
    assert if_eval.score_responses(samples, twice) == 1.0  # 2 of 10 > 10 %
    once = [("same words here", "same words here!")] + distinct[1:]
    assert if_eval.score_responses(samples, once) < 1.0  # 1 of 10 is tolerated


def test_if_eval_weights_responses_by_rule_count():
    one = IfEvalSample(("q1", "q2"), (IfEvalRule(kind="all_lower"),))
    responses = [("all lower here", "Has Upper")]
    c0, c1 = (count_satisfied(one.rules, r) for r in responses[0])
    expected = (if_eval.response_score(c0, 1) + if_eval.response_score(c1, 1)) / 2
    assert if_eval.score_responses([one], responses) == pytest.approx(expected)


def test_if_eval_requests_two_per_sample(tokenizer):
    ctx = PromptContext(tokenizer=tokenizer, sequence_length=512)
    task = spec(Method.IF_EVAL, generation=GenerationSpec(max_new_tokens=30, repetition_penalty=1.2))
    samples = [IfEvalSample(("Why is the sky blue?", "Name a fruit."), (IfEvalRule(kind="all_lower"),))]
    requests = if_eval.build_requests(samples, task, ctx)
    assert len(requests) == 2 and requests[0].prompt_ids != requests[1].prompt_ids
    assert all(r.max_new_tokens == 30 and r.repetition_penalty == 1.2 for r in requests)
    assert "Why is the sky blue?" in tokenizer.decode(list(requests[0].prompt_ids))


# --- exact answer ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "response", "correct"),
    [
        (ExactAnswerSample("q", ("yes",)), "Yes, it is.", True),
        (ExactAnswerSample("q", ("yes",)), "Well... no. Yes!", False),  # the first yes/no counts
        (ExactAnswerSample("q", ("no",)), "I think not", False),
        (ExactAnswerSample("q", ("12",), kind="number"), "She has 12.0 apples", True),
        (ExactAnswerSample("q", ("1200",), kind="number"), "Total: 1,200 coins, not 5", True),
        (ExactAnswerSample("q", ("3.5",), kind="number"), "about 3.49", False),
        (ExactAnswerSample("q", ("-4",), kind="number"), "x = -4", True),
        (ExactAnswerSample("q", ("7",), kind="number"), "seven", False),
    ],
)
def test_exact_answer_matching(sample, response, correct):
    assert exact_answer.is_correct(sample, response) is correct


def test_exact_answer_run(ctx, tokenizer):
    task = spec(Method.EXACT_ANSWER, generation=GenerationSpec(max_new_tokens=10))
    samples = [ExactAnswerSample("Is water wet?", ("yes",), context="Water is a liquid."),
               ExactAnswerSample("2+2?", ("4",), kind="number")]
    engine = RecordingEngine(generations=[gen(tokenizer, "yes"), gen(tokenizer, "5")])
    assert exact_answer.run(engine, samples, task, ctx) == 0.5
    first_prompt = tokenizer.decode(list(engine.calls[0][1][0].prompt_ids))
    assert "Water is a liquid.\n\nIs water wet?" in first_prompt


# --- registry --------------------------------------------------------------------------------


def test_every_method_is_registered():
    assert set(METHODS) == set(Method)
    assert get_method("text_loss").work(5) == 7
    assert get_method(Method.IF_EVAL).work(5) == 10


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(UnknownIdError, match="multiple_choice"):
        get_method("nope")


def test_wrong_sample_type_is_a_config_error(ctx):
    with pytest.raises(ConfigError, match="ReferenceSample"):
        reference_loss.run(RecordingEngine(), [TextSample("x")], spec(Method.REFERENCE_LOSS), ctx)


def test_samples_marked_drop_if_longer_are_dropped_not_cut(ctx, tokenizer):
    # CODEFORCES_COTS (SPEC §7): rows longer than the sequence length are dropped.
    long_ref = "one two three " * 100
    samples = [
        ReferenceSample("q", long_ref, drop_if_longer=True),
        ReferenceSample("Sort: b a", "a b", drop_if_longer=True),
        ReferenceSample("q", long_ref),  # not marked: cut to fit, as before
    ]
    requests = reference_loss.build_requests(samples, ctx)
    assert len(requests) == 2
    assert requests[0].token_ids[requests[0].score_from :] == tuple(encode(tokenizer, "a b"))
    assert len(requests[1].token_ids) == 64


# --- protocol reference-3.1: the reference's tokenisation (goldens: tests/compat) -------------


class Plain:
    """A tokenizer with some attributes replaced (the shared fixture stays untouched)."""

    def __init__(self, tokenizer, **replaced):
        self._tokenizer, self._replaced = tokenizer, replaced

    def __getattr__(self, name):
        if name in self._replaced:
            return self._replaced[name]
        return getattr(self._tokenizer, name)

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)


@pytest.fixture
def ref_ctx(tokenizer):
    return prompt_context(tokenizer, 64, rules=REFERENCE_31.eval)


def test_rules_decide_the_stop_ids_and_the_pad_id(tokenizer):
    class Config:
        eos_token_id = [tokenizer.eos_token_id, 7]
        repetition_penalty = 1.3

    ours = prompt_context(tokenizer, 64, rules=NEXT.eval, generation_config=Config())
    ref = prompt_context(tokenizer, 64, rules=REFERENCE_31.eval, generation_config=Config())
    assert ours.stop_ids == (tokenizer.eos_token_id, 7) and ref.stop_ids == (tokenizer.eos_token_id,)
    assert ref.model_eos_ids == (tokenizer.eos_token_id, 7) and ref.model_repetition_penalty == 1.3
    assert ref.pad_id == tokenizer.pad_token_id
    no_pad = Plain(tokenizer, pad_token_id=None)
    assert prompt_context(no_pad, 64, rules=REFERENCE_31.eval).pad_id == tokenizer.eos_token_id


def test_reference_prompts_keep_no_room_and_if_eval_prompts_are_never_cut(ref_ctx, tokenizer):
    long_question = "word " * 200 + "FINAL QUESTION?"
    full = encode(tokenizer, chat_text(tokenizer, long_question))
    assert prompt_ids(ref_ctx, long_question, reserve=20) == tuple(full[-64:])
    assert prompt_ids(ref_ctx, long_question, reserve=200, cut=False) == tuple(full)
    task = spec(Method.IF_EVAL, generation=GenerationSpec(max_new_tokens=200))
    sample = IfEvalSample((long_question, "Short?"), (IfEvalRule(kind="all_lower"),))
    first, _ = if_eval.build_requests([sample], task, ref_ctx)
    assert len(first.prompt_ids) > 64
    assert "The response must" not in tokenizer.decode(list(if_eval.build_requests(
        [sample], task, prompt_context(tokenizer, 4096))[0].prompt_ids))  # ours: our wording
    assert "All letters in the response must be lowercase." in tokenizer.decode(list(first.prompt_ids))


def test_reference_loss_context_cut_alone_and_whole_reference_appended(ref_ctx, tokenizer):
    reference = "apple banana cherry " * 30
    ids, start = reference_ids(ref_ctx, "Sort: " + "cherry apple banana " * 50, reference)
    assert start == 64 and ids[start:] == tuple(encode(tokenizer, reference, special=True))
    assert len(ids) > 64  # nothing bounds the whole


def test_reasoning_samples_are_encoded_with_special_tokens_and_never_dropped(ref_ctx, tokenizer):
    long_ref = "one two three " * 100
    samples = [ReferenceSample("q", long_ref, system="Think.", drop_if_longer=True)]
    (request,) = reference_loss.build_requests(samples, ref_ctx)
    text = chat_text(tokenizer, "q", system="Think.")
    assert request.token_ids[: request.score_from] == tuple(encode(tokenizer, text, special=True))
    assert len(request.token_ids) > 64


def test_reference_rules_fail_the_model_where_the_reference_does(ref_ctx, tokenizer):
    with pytest.raises(EvalFailed) as info:
        reference_loss.build_requests([ReferenceSample("q", "")], ref_ctx)
    assert info.value.reason == "empty_reference"
    plain = Plain(tokenizer, chat_template=None)
    with pytest.raises(EvalFailed) as info:
        prompt_ids(prompt_context(plain, 64, rules=REFERENCE_31.eval), "q")
    assert info.value.reason == "no_chat_template"
    assert prompt_ids(prompt_context(plain, 64), "q")  # ours prompts a base model plainly


def test_reference_documents_keep_their_end_and_are_padded(ref_ctx, tokenizer):
    text = "the quick brown fox " * 100
    ids = document_ids(ref_ctx, text)
    assert ids == tuple(encode(tokenizer, text, special=True)[-64:])
    short = document_ids(ref_ctx, "a dog")
    body = encode(tokenizer, "a dog", special=True)
    assert short == tuple(body) + (tokenizer.pad_token_id,) * (64 - len(body))
    (request,) = text_loss.build_requests([TextSample("a dog")], ref_ctx)
    assert request.score_from == 1 and len(request.token_ids) == 64  # padding is scored


def test_reference_gate_continues_the_first_two_documents(ref_ctx):
    task = spec(Method.TEXT_LOSS)
    gate = [GenerationResult(tuple(range(20))), GenerationResult(tuple(range(50, 70)))]
    engine = RecordingEngine(generations=gate, losses=[LossResult(64.0, 63)] * 3)
    ctx = dataclasses.replace(ref_ctx, model_eos_ids=(2,), model_repetition_penalty=1.2)
    samples = [TextSample("the cat sat"), TextSample("a dog ran far"), TextSample("x")]
    assert text_loss.run(engine, samples, task, ctx) == pytest.approx(64 / 63)
    first, second = engine.calls[0][1]
    assert first.prompt_ids == document_ids(ctx, "the cat sat")
    assert second.prompt_ids == document_ids(ctx, "a dog ran far")
    assert first.suppress_ids == (2,) and first.repetition_penalty == 1.2 and first.stop_ids == ()
    with pytest.raises(TaskFailed, match=r"^too_few_documents: the gate needs two documents, got 1$"):
        text_loss.run(RecordingEngine(), samples[:1], task, ctx)
