"""Prompts to token ids: the chat template, tokenisation and truncation, in one place.

Every prompt is a single user turn (with an optional system message) followed by the
generation prompt (SPEC §7). The template text already carries any BOS/role tokens, so it is
tokenised with ``add_special_tokens=False``: a second BOS would shift every score.

Truncation keeps what matters for scoring: a prompt loses its *start* (the question and the
assistant header are at its end); a reference keeps its start, so its context is cut from the
left; a plain document keeps its start and is cut on the right.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

Tokenizer = Any  # a transformers tokenizer; kept loose so this module imports no transformers


@dataclass(frozen=True)
class PromptContext:
    """What every method needs besides its samples.

    Attributes:
        tokenizer: the model's (or the competition's fixed) tokenizer.
        sequence_length: the competition's sequence length; no request is longer.
        stop_ids: tokens that end a generation (EOS and end-of-turn ids).
    """

    tokenizer: Tokenizer
    sequence_length: int
    stop_ids: tuple[int, ...] = ()


def chat_text(tokenizer: Tokenizer, user: str, *, system: str | None = None) -> str:
    """The chat-templated text of one user turn, ending with the generation prompt.

    A tokenizer without a chat template gets the plain text (system message, blank line, user
    text, newline) so that a base model can still be scored.
    """
    messages = [{"role": "user", "content": user}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    logger.debug("tokenizer has no chat template; using the plain prompt text")
    return (f"{system}\n\n" if system else "") + user + "\n"


def encode(tokenizer: Tokenizer, text: str, *, special: bool = False) -> list[int]:
    """Token ids of `text`; `special` adds the tokenizer's own BOS/EOS (documents only)."""
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def truncate_left(ids: Sequence[int], max_len: int) -> tuple[int, ...]:
    """Keep the last `max_len` tokens (at least one)."""
    max_len = max(1, max_len)
    return tuple(ids[-max_len:])


def prompt_ids(
    ctx: PromptContext, user: str, *, system: str | None = None, reserve: int = 0
) -> tuple[int, ...]:
    """Templated, tokenised prompt, cut from the left so that `reserve` more tokens fit.

    Args:
        ctx: tokenizer and sequence length.
        user: the user turn.
        system: optional system message.
        reserve: tokens to leave free after the prompt (the generation budget), so that prompt
            and output together stay within the sequence length.

    Returns:
        At least one token id.
    """
    ids = encode(ctx.tokenizer, chat_text(ctx.tokenizer, user, system=system))
    return truncate_left(ids, ctx.sequence_length - reserve)


def reference_ids(
    ctx: PromptContext, user: str, reference: str, *, system: str | None = None
) -> tuple[tuple[int, ...], int]:
    """Context + reference ids within the sequence length, and where the reference starts.

    The reference is the bare reference text's tokens (no EOS), as the reference subnet
    scores it. If the reference alone reaches the sequence length it is cut on the right,
    keeping one context token to predict its first token from; the context is then cut from
    the left to what is left.

    Returns:
        ``(token_ids, score_from)`` with ``1 <= score_from < len(token_ids)``.

    Raises:
        ValueError: the reference text encodes to no tokens.
    """
    ref = encode(ctx.tokenizer, reference)
    if not ref:
        raise ValueError(f"reference {reference!r} encodes to no tokens")
    ref = ref[: max(1, ctx.sequence_length - 1)]
    context = encode(ctx.tokenizer, chat_text(ctx.tokenizer, user, system=system))
    context_kept = truncate_left(context, ctx.sequence_length - len(ref))
    return context_kept + tuple(ref), len(context_kept)


def reference_fits(
    ctx: PromptContext, user: str, reference: str, *, system: str | None = None
) -> bool:
    """Whether the templated context plus the reference fit the sequence length uncut."""
    ref = encode(ctx.tokenizer, reference)
    context = encode(ctx.tokenizer, chat_text(ctx.tokenizer, user, system=system))
    return len(context) + len(ref) <= ctx.sequence_length


def document_ids(ctx: PromptContext, text: str) -> tuple[int, ...]:
    """A document's ids (with the tokenizer's own BOS if it adds one), cut on the right."""
    return tuple(encode(ctx.tokenizer, text, special=True)[: ctx.sequence_length])


def decode(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """Generated ids to text, without special tokens."""
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def stop_ids_of(tokenizer: Tokenizer, extra: Sequence[int] | int | None = None) -> tuple[int, ...]:
    """EOS of the tokenizer plus `extra` (e.g. the generation config's eos ids), sorted, unique."""
    ids: set[int] = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    if isinstance(extra, int):
        ids.add(extra)
    elif extra:
        ids.update(int(i) for i in extra)
    return tuple(sorted(ids))


__all__ = [
    "PromptContext",
    "chat_text",
    "decode",
    "document_ids",
    "encode",
    "prompt_ids",
    "reference_fits",
    "reference_ids",
    "stop_ids_of",
    "truncate_left",
]
