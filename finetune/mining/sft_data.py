"""Supervised fine-tuning data: rows -> (prompt, response) pairs -> masked token sequences.

Three steps, each testable on its own (STYLE habit 11):

1. *Fetch* rows: a local ``.jsonl`` file, a Hugging Face dataset id (through the ``datasets``
   library, imported only then), or the eval tasks' own loaders (`task_pairs`: generated word
   sorting and Dyck, and the competition's reference-loss data through `load_task_samples`).
2. *Shape* each row into an `SftPair` with pure functions (`pairs_from_rows`). Known shapes:
   Dolly-15k (``instruction``/``context``/``response``), LIMA (``conversations``: a list of
   alternating user/assistant strings), chat ``messages`` (``role``/``content`` dicts),
   OASST1 message trees (``message_id``/``parent_id``/``role``/``text``: every
   prompter -> assistant reply pair), and plain ``prompt``/``response`` (or ``completion``,
   ``reference``) rows.
3. *Tokenise* a pair exactly as the validator scores a reference (`encode_pair`): the prompt
   is one chat-templated user turn with the generation prompt, the response follows as its
   own tokens, then the template's end-of-turn marker. Labels are -100 on the prompt, so only
   the response (and the end of turn) is trained.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from finetune.datasets import (
    DataConfig,
    ExactAnswerSample,
    MultipleChoiceSample,
    ReferenceSample,
    load_task_samples,
)
from finetune.errors import ConfigError, DataUnavailable
from finetune.eval.prompting import chat_text, encode, truncate_left

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # labels the loss skips (torch cross-entropy's default ignore_index)
_USER_ROLES = frozenset({"user", "prompter", "human"})
_ASSISTANT_ROLES = frozenset({"assistant", "gpt", "bot"})


@dataclass(frozen=True)
class SftPair:
    """One training example: a single user turn (optional system message) and its answer."""

    prompt: str
    response: str
    system: str | None = None


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of a pair and their labels (-100 where nothing is learned)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]


# --- shaping rows (pure) -----------------------------------------------------------------


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _pair(prompt: object, response: object, system: object = None) -> SftPair | None:
    prompt_text, response_text = _text(prompt), _text(response)
    if not prompt_text or not response_text:
        return None
    return SftPair(prompt_text, response_text, _text(system) or None)


def _dolly(row: Mapping[str, Any]) -> list[SftPair]:
    instruction, context = _text(row.get("instruction")), _text(row.get("context"))
    prompt = f"{instruction}\n\n{context}" if context else instruction
    pair = _pair(prompt, row.get("response"))
    return [pair] if pair else []


def _conversation(turns: Sequence[Any]) -> list[SftPair]:
    """User -> assistant pairs of a conversation, each as a single turn.

    LIMA lists plain strings (user first, then alternating); chat data lists role/content
    dicts. Later turns lose their earlier context: the eval tasks are single-turn.
    """
    pairs: list[SftPair] = []
    system: str | None = None
    pending: str | None = None
    for index, turn in enumerate(turns):
        if isinstance(turn, str):
            role, content = ("user" if index % 2 == 0 else "assistant"), turn
        elif isinstance(turn, Mapping):
            role = str(turn.get("role") or turn.get("from") or "").lower()
            content = turn.get("content", turn.get("value", turn.get("text")))
        else:
            continue
        if role == "system":
            system = _text(content) or None
        elif role in _USER_ROLES:
            pending = _text(content)
        elif role in _ASSISTANT_ROLES and pending:
            if pair := _pair(pending, content, system):
                pairs.append(pair)
            pending = None
    return pairs


def pairs_from_row(row: Mapping[str, Any]) -> list[SftPair]:
    """Shape one row of a known SFT format into pairs (none if the row has no usable pair).

    Args:
        row: a Dolly, LIMA, chat-``messages`` or ``prompt``/``response`` record. OASST1
            message rows need their whole tree: use `pairs_from_rows`.

    Returns:
        Zero or more pairs; empty prompts or responses are skipped.
    """
    if "instruction" in row and "response" in row:
        return _dolly(row)
    for key in ("conversations", "messages", "conversation"):
        if isinstance(row.get(key), list):
            return _conversation(row[key])
    prompt = row.get("prompt", row.get("question", row.get("input")))
    for key in ("response", "completion", "reference", "answer", "output"):
        if key in row:
            pair = _pair(prompt, row[key], row.get("system"))
            return [pair] if pair else []
    return []


def pairs_from_oasst(rows: Iterable[Mapping[str, Any]]) -> list[SftPair]:
    """Every prompter -> assistant reply pair of OASST-style message rows.

    Rows are single messages linked by ``parent_id``. Replies ranked below the best
    (``rank`` > 0) and deleted or non-review-passing messages are skipped.
    """
    messages = {row.get("message_id"): row for row in rows if row.get("message_id")}
    pairs: list[SftPair] = []
    for message in messages.values():
        if str(message.get("role")).lower() not in _ASSISTANT_ROLES:
            continue
        if message.get("deleted") or message.get("review_result") is False:
            continue
        if message.get("rank") not in (None, 0):
            continue
        parent = messages.get(message.get("parent_id"))
        if parent is None or str(parent.get("role")).lower() not in _USER_ROLES:
            continue
        if pair := _pair(parent.get("text"), message.get("text")):
            pairs.append(pair)
    return pairs


def pairs_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[SftPair]:
    """Shape a whole source: OASST trees when the rows carry message ids, else row by row."""
    if rows and all("message_id" in row and "parent_id" in row for row in rows[:10]):
        return pairs_from_oasst(rows)
    return [pair for row in rows for pair in pairs_from_row(row)]


def pair_from_sample(sample: object) -> SftPair | None:
    """An eval sample as a training pair, for the sample kinds that carry their answer."""
    if isinstance(sample, ReferenceSample):
        return _pair(sample.prompt, sample.reference, sample.system)
    if isinstance(sample, MultipleChoiceSample):
        return _pair(sample.question, sample.answer)
    if isinstance(sample, ExactAnswerSample):
        prompt = f"{sample.context}\n\n{sample.prompt}" if sample.context else sample.prompt
        return _pair(prompt, sample.answers[0] if sample.answers else "")
    return None


# --- fetching -------------------------------------------------------------------------------


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (blank lines skipped).

    Raises:
        DataUnavailable: the file is missing or a line is not a JSON object.
    """
    rows: list[dict[str, Any]] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise DataUnavailable(f"cannot read {path}: {error}") from error
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataUnavailable(f"{path}:{number}: not JSON ({error.msg})") from error
        if not isinstance(row, dict):
            raise DataUnavailable(f"{path}:{number}: expected a JSON object")
        rows.append(row)
    return rows


def _hub_rows(dataset_id: str, split: str, max_rows: int | None) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError as error:  # pragma: no cover - a declared dependency
        raise DataUnavailable("the `datasets` package is needed for Hub data") from error
    try:
        data = datasets.load_dataset(dataset_id, split=split)
    except Exception as error:  # the library raises many unrelated types for one "not there"
        raise DataUnavailable(f"cannot load dataset {dataset_id!r}: {error}") from error
    count = len(data) if max_rows is None else min(max_rows, len(data))
    return [dict(data[i]) for i in range(count)]


def load_pairs(source: str, *, max_rows: int | None = None, split: str = "train") -> list[SftPair]:
    """Pairs from one source: a ``.jsonl`` path, or a Hugging Face dataset id.

    Args:
        source: ``path/to/file.jsonl`` or ``databricks/databricks-dolly-15k``,
            ``OpenAssistant/oasst1``, ``GAIR/lima``, ...
        max_rows: read at most this many rows.
        split: the Hub split.

    Returns:
        The pairs found (possibly fewer than the rows).

    Raises:
        DataUnavailable: the file or dataset cannot be read.
    """
    if source.endswith(".jsonl") or Path(source).is_file():
        rows = read_jsonl(source)[:max_rows]
    else:
        rows = _hub_rows(source, split, max_rows)
    pairs = pairs_from_rows(rows)
    logger.info("%s: %d rows -> %d pairs", source, len(rows), len(pairs))
    return pairs


def task_pairs(
    dataset_ids: Iterable[str], *, seed: int, count: int, config: DataConfig
) -> list[SftPair]:
    """Training pairs drawn from the eval loaders (generated or bundled/local data).

    Use a seed other than the eval seed: training on the very samples scored locally would
    make the local score meaningless.

    Raises:
        ConfigError: an unknown loader id.
    """
    pairs: list[SftPair] = []
    for dataset in dataset_ids:
        try:
            samples = load_task_samples(dataset, seed=seed, count=count, config=config)
        except DataUnavailable as error:
            logger.warning("no training data from %s: %s", dataset, error)
            continue
        found = [p for p in map(pair_from_sample, samples) if p is not None]
        if not found:
            raise ConfigError(f"dataset {dataset!r} has no reference answers to train on")
        pairs.extend(found)
    return pairs


# --- tokenising -----------------------------------------------------------------------------


def end_of_turn(tokenizer: Any) -> str:
    """What the chat template writes after an assistant answer (e.g. ``<|im_end|>\\n``).

    Found by rendering a probe conversation; falls back to the EOS token when the template
    does not reproduce the generation prompt as a prefix (or there is no template).
    """
    eos = tokenizer.eos_token or ""
    if not getattr(tokenizer, "chat_template", None):
        return eos
    probe_user, probe_answer = "Probe question?", "Probe answer."
    prompt = chat_text(tokenizer, probe_user)
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": probe_user}, {"role": "assistant", "content": probe_answer}],
        tokenize=False,
    )
    head = prompt + probe_answer
    if not full.startswith(head) or len(full) == len(head):
        return eos
    return full[len(head) :]


def encode_pair(
    tokenizer: Any, pair: SftPair, *, max_length: int, suffix: str | None = None
) -> EncodedExample | None:
    """Token ids and labels of one pair, laid out as the reference-loss eval scores it.

    ``[chat-templated prompt][response][end of turn]``, labels -100 on the prompt. Over
    `max_length`, the prompt is cut from the left (as the eval does); a response that alone
    does not fit is cut on the right, keeping one prompt token.

    Args:
        tokenizer: the competition's tokenizer, with its chat template.
        pair: the example.
        max_length: the competition's sequence length.
        suffix: end-of-turn text (default: `end_of_turn(tokenizer)`).

    Returns:
        The example, or None when the response encodes to no tokens.
    """
    response = encode(tokenizer, pair.response)
    if not response:
        return None
    tail = encode(tokenizer, end_of_turn(tokenizer) if suffix is None else suffix)
    answer = (response + tail)[: max(1, max_length - 1)]
    context = encode(tokenizer, chat_text(tokenizer, pair.prompt, system=pair.system))
    prompt = list(truncate_left(context, max_length - len(answer)))
    ids = tuple(prompt + answer)
    labels = (IGNORE_INDEX,) * len(prompt) + tuple(answer)
    return EncodedExample(ids, labels)


def encode_pairs(tokenizer: Any, pairs: Iterable[SftPair], *, max_length: int) -> list[EncodedExample]:
    """`encode_pair` over many pairs (the end-of-turn marker found once); empty ones dropped."""
    suffix = end_of_turn(tokenizer)
    encoded = (encode_pair(tokenizer, p, max_length=max_length, suffix=suffix) for p in pairs)
    return [e for e in encoded if e is not None]


# --- batching ------------------------------------------------------------------------------------


class SftDataset(torch.utils.data.Dataset):
    """Encoded examples as a map-style dataset of ``{input_ids, labels}`` lists."""

    def __init__(self, examples: Sequence[EncodedExample]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        example = self.examples[index]
        return {"input_ids": list(example.input_ids), "labels": list(example.labels)}


@dataclass(frozen=True)
class SftCollator:
    """Right-pads a batch to its longest row: pads get attention 0 and label -100."""

    pad_id: int

    def __call__(self, rows: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # [batch, width]
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[i, :n] = torch.tensor(row["input_ids"])
            labels[i, :n] = torch.tensor(row["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}



__all__ = [
    "IGNORE_INDEX",
    "EncodedExample",
    "SftCollator",
    "SftDataset",
    "SftPair",
    "encode_pair",
    "encode_pairs",
    "end_of_turn",
    "load_pairs",
    "pair_from_sample",
    "pairs_from_oasst",
    "pairs_from_row",
    "pairs_from_rows",
    "read_jsonl",
    "task_pairs",
]
