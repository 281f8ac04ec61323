"""SFT data: row shaping on plain dicts, file reading, and the masked token layout."""

from __future__ import annotations

import json

import pytest

from finetune.datasets import (
    DataConfig,
    ExactAnswerSample,
    MultipleChoiceSample,
    ReferenceSample,
    TextSample,
)
from finetune.errors import DataUnavailable
from finetune.eval.prompting import PromptContext, encode, reference_ids
from finetune.mining.sft_data import (
    IGNORE_INDEX,
    SftCollator,
    SftDataset,
    SftPair,
    encode_pair,
    encode_pairs,
    end_of_turn,
    load_pairs,
    pair_from_sample,
    pairs_from_oasst,
    pairs_from_row,
    pairs_from_rows,
    read_jsonl,
    task_pairs,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from finetune.eval.loading import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def test_dolly_rows_join_instruction_and_context():
    row = {"instruction": "Summarise.", "context": "A long text.", "response": " Short. ", "category": "x"}
    assert pairs_from_row(row) == [SftPair("Summarise.\n\nA long text.", "Short.")]
    assert pairs_from_row({"instruction": "Say hi.", "context": "", "response": "hi"}) == [
        SftPair("Say hi.", "hi")
    ]
    assert pairs_from_row({"instruction": "Say hi.", "context": "", "response": "  "}) == []


def test_lima_conversations_alternate_user_and_assistant():
    row = {"conversations": ["Q1", "A1", "Q2", "A2", "Q3"], "source": "stackexchange"}
    assert pairs_from_row(row) == [SftPair("Q1", "A1"), SftPair("Q2", "A2")]


def test_chat_messages_keep_the_system_prompt():
    row = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Why?"},
            {"role": "assistant", "content": "Because."},
            {"role": "assistant", "content": "orphan"},
        ]
    }
    assert pairs_from_row(row) == [SftPair("Why?", "Because.", system="Be brief.")]
    sharegpt = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    assert pairs_from_row(sharegpt) == [SftPair("Hi", "Hello")]


def test_plain_prompt_response_rows():
    assert pairs_from_row({"prompt": "P", "completion": "C"}) == [SftPair("P", "C")]
    assert pairs_from_row({"prompt": "P", "reference": "R", "system": "S"}) == [SftPair("P", "R", "S")]
    assert pairs_from_row({"question": "Q", "answer": "A"}) == [SftPair("Q", "A")]
    assert pairs_from_row({"text": "no pair here"}) == []


def _msg(mid, parent, role, text, **extra):
    return {"message_id": mid, "parent_id": parent, "role": role, "text": text, **extra}


def test_oasst_trees_pair_each_prompter_with_its_best_replies():
    rows = [
        _msg("1", None, "prompter", "Root question"),
        _msg("2", "1", "assistant", "Best answer", rank=0),
        _msg("3", "1", "assistant", "Worse answer", rank=1),
        _msg("4", "2", "prompter", "Follow-up"),
        _msg("5", "4", "assistant", "Follow-up answer"),
        _msg("6", "4", "assistant", "Deleted answer", deleted=True),
        _msg("7", "missing", "assistant", "Orphan"),
    ]
    expected = {SftPair("Root question", "Best answer"), SftPair("Follow-up", "Follow-up answer")}
    assert set(pairs_from_oasst(rows)) == expected
    assert set(pairs_from_rows(rows)) == expected  # detected by its message ids


def test_eval_samples_with_answers_become_pairs():
    assert pair_from_sample(ReferenceSample("P", "R", "S")) == SftPair("P", "R", "S")
    assert pair_from_sample(MultipleChoiceSample("Q?\nA. x\nB. y", "B")) == SftPair("Q?\nA. x\nB. y", "B")
    boolq = ExactAnswerSample("Is it?", ("yes",), context="Passage.")
    assert pair_from_sample(boolq) == SftPair("Passage.\n\nIs it?", "yes")
    assert pair_from_sample(TextSample("document")) is None


def test_read_jsonl_and_load_pairs(tmp_path):
    path = tmp_path / "dolly.jsonl"
    rows = [{"instruction": f"Q{i}", "context": "", "response": f"A{i}"} for i in range(3)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert read_jsonl(path) == rows
    assert load_pairs(str(path), max_rows=2) == [SftPair("Q0", "A0"), SftPair("Q1", "A1")]
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataUnavailable, match="bad.jsonl:2"):
        read_jsonl(tmp_path / "bad.jsonl")
    with pytest.raises(DataUnavailable):
        read_jsonl(tmp_path / "missing.jsonl")


def test_task_pairs_are_seeded_word_sorting_answers():
    config = DataConfig(offline=True)
    pairs = task_pairs(["word_sorting"], seed=3, count=5, config=config)
    assert len(pairs) == 5 and pairs == task_pairs(["word_sorting"], seed=3, count=5, config=config)
    for pair in pairs:
        words = pair.prompt.rstrip(".").split(": ", 1)[1].split()
        assert pair.response == " ".join(sorted(words))


def test_end_of_turn_is_read_from_the_chat_template(tokenizer):
    assert end_of_turn(tokenizer) == "<|im_end|>\n"


def test_encoded_pair_matches_the_eval_layout_and_masks_the_prompt(tokenizer):
    pair = SftPair("Sort the following words alphabetically: pear apple.", "apple pear")
    example = encode_pair(tokenizer, pair, max_length=512)
    ctx = PromptContext(tokenizer=tokenizer, sequence_length=512)
    eval_ids, score_from = reference_ids(ctx, pair.prompt, pair.response)
    # Same context and reference tokens as the validator scores, then the end-of-turn marker.
    assert example.input_ids[: len(eval_ids)] == eval_ids
    tail = encode(tokenizer, "<|im_end|>\n")
    assert example.input_ids[len(eval_ids) :] == tuple(tail)
    assert example.labels[:score_from] == (IGNORE_INDEX,) * score_from
    assert example.labels[score_from:] == example.input_ids[score_from:]


def test_long_pairs_lose_the_prompt_start_first(tokenizer):
    pair = SftPair("word " * 200, "short answer")
    example = encode_pair(tokenizer, pair, max_length=32)
    answer = encode(tokenizer, "short answer") + encode(tokenizer, "<|im_end|>\n")
    assert len(example.input_ids) == 32
    assert example.input_ids[-len(answer) :] == tuple(answer)
    assert example.labels.count(IGNORE_INDEX) == 32 - len(answer)
    huge = encode_pair(tokenizer, SftPair("q", "long " * 100), max_length=16)
    assert len(huge.input_ids) == 16 and huge.labels[0] == IGNORE_INDEX and huge.labels[1] != IGNORE_INDEX
    assert encode_pairs(tokenizer, [pair, SftPair("q", "a")], max_length=32)[0] == example


def test_collator_pads_right_and_masks_pads():
    data = SftDataset(
        [
            type("E", (), {"input_ids": (5, 6, 7), "labels": (-100, 6, 7)})(),
            type("E", (), {"input_ids": (8,), "labels": (8,)})(),
        ]
    )
    batch = SftCollator(pad_id=0)([data[0], data[1]])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
