"""The tokenizer round trip: a model's own tokenizer must give back the texts it is scored on.

A loss is counted over the tokens a tokenizer makes of a text. A miner who ships their own
tokenizer controls that: a normalizer that inserts a predictable marker after every word
halves a per-token loss without the model learning anything, and one that drops or rewrites
characters shortens what is scored. Counting the loss per byte (`EvalRules.loss_unit`) takes
care of the first; this check of the second: every text of a round's loss tasks must come
back from ``decode(encode(text))`` as it was. Unicode NFC is allowed (Qwen's tokenizers
normalise to it; it composes characters and drops nothing a reader would see).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

from finetune.competition import Competition, Method
from finetune.datasets.samples import ReferenceSample, Sample, TextSample
from finetune.eval.prompting import Tokenizer

LOSS_METHODS = (Method.REFERENCE_LOSS, Method.TEXT_LOSS)
_SHOWN = 24  # characters of the first difference shown in the reason


def loss_texts(competition: Competition, samples: dict[str, Sequence[Sample]]) -> list[str]:
    """The texts the competition's loss tasks tokenise, each once, in order."""
    texts: list[str] = []
    for task in competition.tasks:
        if task.method not in LOSS_METHODS:
            continue
        for sample in samples.get(task.name, ()):
            texts.extend(_texts_of(sample))
    return list(dict.fromkeys(t for t in texts if t))


def _texts_of(sample: Sample) -> Iterable[str]:
    if isinstance(sample, ReferenceSample):
        yield sample.prompt
        yield sample.reference
        if sample.system:
            yield sample.system
    elif isinstance(sample, TextSample):
        yield sample.text


def round_trip_failure(tokenizer: Tokenizer, texts: Sequence[str]) -> str:
    """Why `tokenizer` does not give `texts` back ("" when every one comes back).

    Each text is encoded without the tokenizer's own specials and decoded with every token
    kept and no clean-up of spaces, so nothing but the tokenizer's own behaviour is measured.
    """
    if not texts:
        return ""
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    decoded = tokenizer.batch_decode(
        encoded, skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    failed = [(text, back) for text, back in zip(texts, decoded, strict=True) if not _same(text, back)]
    if not failed:
        return ""
    text, back = failed[0]
    at = _first_difference(text, back)
    return (
        f"{len(failed)} of {len(texts)} texts do not come back from decode(encode(text)); "
        f"the first differs at character {at}: {text[at:at + _SHOWN]!r} came back as "
        f"{back[at:at + _SHOWN]!r}"
    )


def _same(text: str, back: str) -> bool:
    return back == text or unicodedata.normalize("NFC", back) == unicodedata.normalize("NFC", text)


def _first_difference(a: str, b: str) -> int:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return min(len(a), len(b))


__all__ = ["LOSS_METHODS", "loss_texts", "round_trip_failure"]
