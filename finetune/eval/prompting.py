"""Prompts to token ids: the chat template, tokenisation and truncation, in one place.

Every prompt is a single user turn (with an optional system message) followed by the
generation prompt (SPEC §7). How the ids are cut follows the protocol's `EvalRules.prompting`:

- ``ours``: the template text already carries any BOS/role tokens, so it is tokenised with
  ``add_special_tokens=False`` (a second BOS would shift every score). A prompt loses its
  *start* (the question and the assistant header are at its end) and leaves room for its
  generation budget; a reference keeps its start, so its context is cut from the left; a plain
  document keeps its start and is cut on the right.
- ``reference`` (the reference validator's tokenisation, fact by fact): generation prompts are
  cut from the left to the sequence length with no room kept (IF-eval prompts never cut);
  a reasoning context (a sample with a system prompt) is the templated *text* encoded with the
  tokenizer's special tokens, and every reference is encoded with them (a BOS-adding tokenizer
  puts a BOS before the reference); neither is ever cut, and a short context (no system prompt)
  is cut from the left alone with the whole reference appended; a document keeps its specials
  and its end.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from finetune.errors import EvalFailed
from finetune.protocol import NEXT, EvalRules

logger = logging.getLogger(__name__)

Tokenizer = Any  # a transformers tokenizer; kept loose so this module imports no transformers


@dataclass(frozen=True)
class PromptContext:
    """What every method needs besides its samples.

    Attributes:
        tokenizer: the model's (or the competition's fixed) tokenizer.
        sequence_length: the competition's sequence length.
        stop_ids: tokens that end a generation (EOS, and end-of-turn ids where the rules say).
        rules: the protocol's eval rules (default: `NEXT`'s).
        pad_id: the id text-loss documents are padded with when the rules pad them (the
            reference's: the tokenizer's pad token, else its EOS).
        model_eos_ids: the model's `generation_config` EOS ids (the reference's gate bans them).
        model_repetition_penalty: the model's `generation_config` repetition penalty (the
            reference's gate generates with the model's own settings).
    """

    tokenizer: Tokenizer
    sequence_length: int
    stop_ids: tuple[int, ...] = ()
    rules: EvalRules = NEXT.eval
    pad_id: int | None = None
    model_eos_ids: tuple[int, ...] = ()
    model_repetition_penalty: float = 1.0

    @property
    def reference(self) -> bool:
        """Whether requests are built as the reference validator builds them."""
        return self.rules.prompting == "reference"


def chat_text(
    tokenizer: Tokenizer, user: str, *, system: str | None = None, require_template: bool = False
) -> str:
    """The chat-templated text of one user turn, ending with the generation prompt.

    A tokenizer without a chat template gets the plain text (system message, blank line, user
    text, newline) so that a base model can still be scored, unless `require_template`.

    Raises:
        EvalFailed: reason ``no_chat_template``, when required and there is none (the
            reference's template call raises, and the model fails).
    """
    messages = [{"role": "user", "content": user}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if require_template:
        raise EvalFailed("the tokenizer has no chat template", reason="no_chat_template")
    logger.debug("tokenizer has no chat template; using the plain prompt text")
    return (f"{system}\n\n" if system else "") + user + "\n"


def encode(tokenizer: Tokenizer, text: str, *, special: bool = False) -> list[int]:
    """Token ids of `text`; `special` adds the tokenizer's own BOS/EOS."""
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def truncate_left(ids: Sequence[int], max_len: int) -> tuple[int, ...]:
    """Keep the last `max_len` tokens (at least one)."""
    max_len = max(1, max_len)
    return tuple(ids[-max_len:])


def _templated(ctx: PromptContext, user: str, system: str | None) -> str:
    return chat_text(ctx.tokenizer, user, system=system, require_template=ctx.reference)


def prompt_ids(
    ctx: PromptContext,
    user: str,
    *,
    system: str | None = None,
    reserve: int = 0,
    cut: bool = True,
) -> tuple[int, ...]:
    """Templated, tokenised generation prompt.

    Args:
        ctx: tokenizer, sequence length and rules.
        user: the user turn.
        system: optional system message.
        reserve: ours: tokens to leave free after the prompt (the generation budget), so that
            prompt and output together stay within the sequence length. The reference keeps
            no room.
        cut: the reference cuts a prompt from the left to the sequence length, or (False, its
            IF-eval prompts) not at all. Ours always cuts.

    Returns:
        At least one token id.

    Raises:
        EvalFailed: reference rules and a tokenizer without a chat template.
    """
    ids = encode(ctx.tokenizer, _templated(ctx, user, system))
    if ctx.reference:
        return tuple(ids[-ctx.sequence_length :]) if cut else tuple(ids)
    return truncate_left(ids, ctx.sequence_length - reserve)


def reference_ids(
    ctx: PromptContext, user: str, reference: str, *, system: str | None = None
) -> tuple[tuple[int, ...], int]:
    """Context + reference ids, and where the reference starts.

    Ours: within the sequence length; the reference is the bare reference text's tokens (no
    EOS); if it alone reaches the sequence length it is cut on the right, keeping one context
    token to predict its first token from, and the context is cut from the left to what is
    left. Reference rules: see the module docstring (nothing bounds the total length).

    Returns:
        ``(token_ids, score_from)`` with ``1 <= score_from < len(token_ids)``.

    Raises:
        ValueError: ours, the reference text encodes to no tokens.
        EvalFailed: reference rules, reason ``empty_reference`` (the reference's error handler
            itself raises then, failing the model) or ``no_chat_template``.
    """
    if ctx.reference:
        return _reference_ids_as_reference(ctx, user, reference, system)
    ref = encode(ctx.tokenizer, reference)
    if not ref:
        raise ValueError(f"reference {reference!r} encodes to no tokens")
    ref = ref[: max(1, ctx.sequence_length - 1)]
    context = encode(ctx.tokenizer, chat_text(ctx.tokenizer, user, system=system))
    context_kept = truncate_left(context, ctx.sequence_length - len(ref))
    return context_kept + tuple(ref), len(context_kept)


def _reference_ids_as_reference(
    ctx: PromptContext, user: str, reference: str, system: str | None
) -> tuple[tuple[int, ...], int]:
    ref = encode(ctx.tokenizer, reference, special=True)
    if not ref:
        raise EvalFailed(f"reference {reference[:80]!r} encodes to no tokens", reason="empty_reference")
    text = _templated(ctx, user, system)
    if system is None:  # dyck, word sorting: the template call cuts the context alone
        context = encode(ctx.tokenizer, text)[-ctx.sequence_length :]
    else:  # reasoning: the templated text encoded again, special tokens and all
        context = encode(ctx.tokenizer, text, special=True)
    return tuple(context) + tuple(ref), len(context)


def reference_fits(
    ctx: PromptContext, user: str, reference: str, *, system: str | None = None
) -> bool:
    """Whether the templated context plus the reference fit the sequence length uncut."""
    ref = encode(ctx.tokenizer, reference)
    context = encode(ctx.tokenizer, chat_text(ctx.tokenizer, user, system=system))
    return len(context) + len(ref) <= ctx.sequence_length


def cut_document(tokenizer: Tokenizer, text: str, length: int, *, side: str) -> list[int]:
    """A document's ids with the tokenizer's own specials, at most `length` of them.

    As a tokenizer's own truncation does: the specials (BOS, EOS) stay, the text's tokens are
    cut on `side` (``"left"`` keeps the end, ``"right"`` the start).
    """
    full = encode(tokenizer, text, special=True)
    if len(full) <= length:
        return full
    body = encode(tokenizer, text)
    start = _find(full, body)
    if start is None:  # specials inside the text's tokens: cut the whole row instead
        return full[-length:] if side == "left" else full[:length]
    keep = max(0, length - (len(full) - len(body)))
    kept = (body[len(body) - keep :] if keep else []) if side == "left" else body[:keep]
    return full[:start] + kept + full[start + len(body) :]


def _find(haystack: list[int], needle: list[int]) -> int | None:
    for start in range(len(haystack) - len(needle) + 1):
        if haystack[start : start + len(needle)] == needle:
            return start
    return None


def pad_document(ids: Sequence[int], length: int, pad_id: int, *, left: bool = False) -> tuple[int, ...]:
    """`ids` padded with `pad_id` to `length` (before them if `left`)."""
    padding = [pad_id] * max(0, length - len(ids))
    return tuple(padding + list(ids)) if left else tuple(list(ids) + padding)


def document_ids(ctx: PromptContext, text: str) -> tuple[int, ...]:
    """A text-loss document's ids.

    Ours: with the tokenizer's own BOS if it adds one, cut on the right. Reference rules: cut
    on the left keeping the specials. With `EvalRules.text_loss_padding`: padded to the
    sequence length with `ctx.pad_id`, on the tokenizer's padding side.

    Raises:
        EvalFailed: reason ``no_pad_token``: padding is asked for and there is no pad id.
    """
    if ctx.reference:
        ids = cut_document(ctx.tokenizer, text, ctx.sequence_length, side="left")
    else:
        ids = encode(ctx.tokenizer, text, special=True)[: ctx.sequence_length]
    if not ctx.rules.text_loss_padding:
        return tuple(ids)
    if ctx.pad_id is None:
        raise EvalFailed("the tokenizer has no pad and no EOS token to pad with", reason="no_pad_token")
    left = getattr(ctx.tokenizer, "padding_side", "right") == "left"
    return pad_document(ids, ctx.sequence_length, ctx.pad_id, left=left)


def scored_bytes(tokenizer: Tokenizer, text: str, kept_ids: Sequence[int], unscored: int = 0) -> int:
    """The UTF-8 bytes of `text` that the scored part of its kept tokens stands for.

    `kept_ids` are the text's tokens as kept for scoring, from the text's start (a BOS and an
    EOS of the tokenizer's own allowed at either end), of which the first `unscored` are not
    scored. What they cover is the longest common prefix (in Unicode NFC) of their decoding
    and the text itself: a decoder never decides the count, so one that decodes a cut text to
    more than it was given (or to anything but the text) only lowers it. See
    `finetune.eval.round_trip` for the check of whole texts.
    """
    target = unicodedata.normalize("NFC", text)
    specials = set(getattr(tokenizer, "all_special_ids", ()) or ())

    def covered(ids: Sequence[int]) -> int:
        ids = list(ids)
        while ids and ids[0] in specials:  # the tokenizer's own BOS (its text is not the text's)
            ids.pop(0)
        while ids and ids[-1] in specials:
            ids.pop()
        decoded = unicodedata.normalize("NFC", tokenizer.decode(
            ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
        ))
        same = 0
        for a, b in zip(decoded, target, strict=False):
            if a != b:
                break
            same += 1
        return len(target[:same].encode("utf-8"))

    total = covered(kept_ids)
    return max(0, total - covered(kept_ids[:unscored])) if unscored else total


def decode(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """Generated ids to text, without special tokens."""
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def _ids(value: Sequence[int] | int | None) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(i) for i in value)


def stop_ids_of(tokenizer: Tokenizer, extra: Sequence[int] | int | None = None) -> tuple[int, ...]:
    """EOS of the tokenizer plus `extra` (e.g. the generation config's eos ids), sorted, unique."""
    ids = set(_ids(extra))
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return tuple(sorted(ids))


def prompt_context(
    tokenizer: Tokenizer,
    sequence_length: int,
    *,
    rules: EvalRules = NEXT.eval,
    generation_config: Any = None,
) -> PromptContext:
    """The context a model is scored in, from its tokenizer and generation config.

    Stop ids: the tokenizer's EOS, plus the generation config's EOS ids if the rules say so.
    Pad id: the tokenizer's pad token, else its EOS (as the reference validator sets it).
    """
    config_eos = _ids(getattr(generation_config, "eos_token_id", None))
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    penalty = getattr(generation_config, "repetition_penalty", None)
    return PromptContext(
        tokenizer=tokenizer,
        sequence_length=sequence_length,
        stop_ids=stop_ids_of(tokenizer, config_eos if rules.stop_on_generation_config_eos else None),
        rules=rules,
        pad_id=int(pad) if pad is not None else None,
        model_eos_ids=config_eos,
        model_repetition_penalty=float(penalty) if isinstance(penalty, (int, float)) else 1.0,
    )


__all__ = [
    "PromptContext",
    "chat_text",
    "scored_bytes",
    "cut_document",
    "decode",
    "document_ids",
    "encode",
    "pad_document",
    "prompt_context",
    "prompt_ids",
    "reference_fits",
    "reference_ids",
    "stop_ids_of",
    "truncate_left",
]
