"""The tokenizer round trip and the loss per byte (protocol `next`, issue 8 item 5).

The attack: a miner's own tokenizer whose normalizer inserts a predictable marker after every
word. Under a per-token loss the markers, predicted almost for free, dilute the mean (the
reported case cut WORD_SORTING's raw loss from 6.94 to 2.34 with every decoder layer zeroed).
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from finetune.competition import Method, Normalization, NormKind
from finetune.datasets.samples import ReferenceSample, TextSample
from finetune.errors import EvalFailed
from finetune.eval import NaiveEngine, TaskData, evaluate_model, load_model
from finetune.eval.methods import text_loss
from finetune.eval.methods.base import loss_score
from finetune.eval.prompting import document_ids, prompt_context
from finetune.eval.requests import LossRequest, LossResult
from finetune.eval.round_trip import loss_texts, round_trip_failure
from finetune.protocol import NEXT, REFERENCE_31
from finetune.validator.reasons import lookup
from tests.eval.test_evaluate import task, tiny_competition

CAP40 = Normalization(kind=NormKind.INVERSE_EXPONENTIAL, ceiling=40.0)
COMPETITION = tiny_competition((
    task("SORT", Method.REFERENCE_LOSS, 0.5, normalization=CAP40),
    task("TEXT", Method.TEXT_LOSS, 0.5, normalization=CAP40),
))
DATA = TaskData(seed=3, samples={
    "SORT": (
        ReferenceSample("Sort these words: pear apple fig", "apple fig pear"),
        ReferenceSample("Sort these words: yak cat emu dog", "cat dog emu yak"),
    ),
    "TEXT": (
        TextSample("The water cycle moves water between the sea, the air and the land."),
        TextSample("Rivers carry rain back to the sea, and the sun lifts it again."),
    ),
})


def _with_normalizer(src, dst, normalizer: dict):
    shutil.copytree(src, dst)
    path = dst / "tokenizer.json"
    spec = json.loads(path.read_text())
    spec["normalizer"] = normalizer
    path.write_text(json.dumps(spec))
    return dst


@pytest.fixture(scope="module")
def marker_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model, with a normalizer that writes " qq " for every space."""
    marker = {"type": "Replace", "pattern": {"String": " "}, "content": " qq "}
    return _with_normalizer(tiny_model_dir, tmp_path_factory.mktemp("marker") / "m", marker)


def test_a_byte_level_tokenizer_gives_every_text_back(tiny_model_dir):
    _, tokenizer = load_model(tiny_model_dir)
    texts = ["plain words", "  two leading spaces", "tabs\tand\nnew lines\r\n", "é, ß, 中文, 🙂",
             "<|im_end|> looks special", "trailing space "]
    assert round_trip_failure(tokenizer, texts) == ""


def test_a_marker_normalizer_fails_the_round_trip_with_where(marker_model_dir):
    _, tokenizer = load_model(marker_model_dir)
    failure = round_trip_failure(tokenizer, ["nothing to change", "apple fig pear"])
    assert failure.startswith("2 of 2 texts do not come back")
    assert "character 8: 'to change' came back as 'qq to qq change'" in failure


def test_unicode_nfc_is_allowed_but_dropped_characters_are_not(tiny_model_dir, tmp_path):
    nfc = _with_normalizer(tiny_model_dir, tmp_path / "nfc", {"type": "NFC"})
    _, tokenizer = load_model(nfc)
    assert round_trip_failure(tokenizer, ["cafe\u0301 au lait"]) == ""  # comes back composed
    lower = _with_normalizer(tiny_model_dir, tmp_path / "lower", {"type": "Lowercase"})
    _, tokenizer = load_model(lower)
    assert "came back as 'sort'" in round_trip_failure(tokenizer, ["Sort"])


def test_loss_texts_are_those_of_the_loss_tasks_once_each():
    samples = dict(DATA.samples) | {"OTHER": (TextSample("not a loss task"),)}
    texts = loss_texts(COMPETITION, samples)
    assert "apple fig pear" in texts and "Sort these words: pear apple fig" in texts
    assert len(texts) == len(set(texts)) == 6


def test_next_fails_a_tokenizer_that_changes_the_text(marker_model_dir):
    with pytest.raises(EvalFailed) as failed:
        evaluate_model(marker_model_dir, COMPETITION, DATA, rules=NEXT.eval)
    assert failed.value.reason == "tokenizer_round_trip"
    assert lookup("tokenizer_round_trip").stage == "scoring"
    # Without the check the same model is scored: the check, not something else, refuses it.
    unchecked = NEXT.eval.model_copy(update={"tokenizer_round_trip": False})
    scored = evaluate_model(marker_model_dir, COMPETITION, DATA, rules=unchecked)
    assert math.isfinite(scored.tasks["SORT"].raw)


def test_the_reference_rules_check_nothing(marker_model_dir):
    assert not REFERENCE_31.eval.tokenizer_round_trip and REFERENCE_31.eval.loss_unit == "token"
    rules = REFERENCE_31.eval.model_copy(update={"prompting": "ours", "text_loss_padding": False})
    scored = evaluate_model(marker_model_dir, COMPETITION, DATA, rules=rules)
    assert math.isfinite(scored.tasks["SORT"].raw)


def test_a_uniform_model_costs_log2_vocab_bits_per_token_spread_over_the_bytes(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every next token equally likely: ln(V) nats each
    vocab = model.config.vocab_size
    per_token = evaluate_model((model, tokenizer), COMPETITION, DATA,
                               rules=NEXT.eval.model_copy(update={"loss_unit": "token"}))
    assert per_token.tasks["SORT"].raw == pytest.approx(math.log(vocab), rel=1e-5)
    per_byte = evaluate_model((model, tokenizer), COMPETITION, DATA, rules=NEXT.eval)

    def bits_per_byte(text: str, scored_tokens: int) -> float:
        return scored_tokens * math.log2(vocab) / len(text.encode())

    refs = [s.reference for s in DATA.samples["SORT"]]
    want = sum(bits_per_byte(r, len(tokenizer(r, add_special_tokens=False)["input_ids"]))
               for r in refs) / len(refs)
    assert per_byte.tasks["SORT"].raw == pytest.approx(want, rel=1e-5)
    # Text loss scores every token after the first; the bytes are its decoded scored tokens.
    # (The gate fails a uniform model, so the loss is asked of the method's steps directly.)
    docs = [s.text for s in DATA.samples["TEXT"]]
    ids = [tokenizer(d, add_special_tokens=True)["input_ids"] for d in docs]
    scored = [len(tokenizer.decode(i[1:], skip_special_tokens=True).encode()) for i in ids]
    ctx = prompt_context(tokenizer, 256, rules=NEXT.eval)
    requests = text_loss.build_requests(DATA.samples["TEXT"], ctx)
    assert [r.n_bytes for r in requests] == scored
    raw = text_loss.score(NaiveEngine(model).loss(requests), requests, "byte")
    want_text = sum((len(i) - 1) * math.log2(vocab) / b for i, b in zip(ids, scored, strict=True)) / 2
    assert raw == pytest.approx(want_text, rel=1e-5)


def test_loss_score_counts_bits_per_byte_and_no_fewer_than_one_byte():
    results = [LossResult(sum_nll=math.log(2) * 8, n_tokens=4), LossResult(sum_nll=math.log(2), n_tokens=1)]
    requests = [LossRequest((1, 2, 3, 4, 5), 1, n_bytes=16), LossRequest((1, 2), 1, n_bytes=0)]
    assert loss_score(results, requests, "byte") == pytest.approx((8 / 16 + 1 / 1) / 2)
    assert loss_score(results, requests, "token") == pytest.approx((2 * math.log(2) + math.log(2)) / 2)


def _prefix_padding_tokenizer(base, tmp_path):
    """Passes the round trip, yet decodes a cut text (no end mark) to 100,000 extra bytes: the
    hostile review's tokenizer that once cut a long document's bits per byte from 3.20 to 1.86."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    mark = "\u2403"
    backend = Tokenizer.from_str(base.backend_tokenizer.to_str())
    backend.normalizer = normalizers.Replace(Regex(r"\z"), mark)  # an end mark on every text
    backend.decoder = decoders.Sequence([
        decoders.ByteLevel(),
        decoders.Replace(Regex(r"\A(?![\s\S]*" + mark + r"\z)"), "x" * 100_000),
        decoders.Replace(mark, ""),
    ])
    evil = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=base.eos_token, bos_token=base.bos_token,
                                   pad_token=base.pad_token)
    evil.save_pretrained(tmp_path / "evil")
    return AutoTokenizer.from_pretrained(tmp_path / "evil")


def test_a_decoder_cannot_make_a_cut_text_count_more_bytes(tiny_model_dir, tmp_path):
    _, honest = load_model(tiny_model_dir)
    evil = _prefix_padding_tokenizer(honest, tmp_path)
    text = ("The water cycle moves water between the ocean, the air and the land. " * 40).strip()
    assert round_trip_failure(evil, [text]) == ""  # the whole text comes back: the check alone misses it
    counts = {}
    for name, tokenizer in (("honest", honest), ("evil", evil)):
        ctx = prompt_context(tokenizer, 64, rules=NEXT.eval)
        ids = document_ids(ctx, text)
        assert len(ids) == 64  # cut: the text is far longer than 64 tokens
        counts[name] = text_loss.document_bytes(ctx, [text], [ids])[0]
    kept = honest.decode(document_ids(prompt_context(honest, 64, rules=NEXT.eval), text))
    first = honest.decode(document_ids(prompt_context(honest, 64, rules=NEXT.eval), text)[:1])
    assert counts["honest"] == len(kept.encode()) - len(first.encode())  # exactly the scored text's bytes
    assert counts["evil"] <= counts["honest"]  # the padding decodes to nothing the text has
