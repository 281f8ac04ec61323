"""Text that a miner controls, made safe to record and to show. A leaf module.

Commitments, repo names, file contents and the messages of exceptions raised while loading a
miner's files (a chat template can `raise_exception` any string) reach logs, the state file
and the operator's terminal. They are data: control characters (terminal escapes, bidi
overrides) are shown escaped, and the length is bounded, so no miner can paint the console,
hide a line or fill a log. Rendering as plain text, never markup, is the console's job
(`finetune.validator.report`).
"""

from __future__ import annotations

import unicodedata

DEFAULT_LIMIT = 300  # characters; enough for a rule and the value that broke it


def _escaped(ch: str) -> str:
    # Cc: C0/C1 controls (ESC starts terminal sequences); Cf: format characters such as the
    # bidi overrides U+202E, which reorder what an operator reads. Zs/Zl/Zp other than the
    # plain space would break a one-line record, so they are escaped too.
    category = unicodedata.category(ch)
    if category in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") or (category == "Zs" and ch != " "):
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
    return ch


def printable(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """`value` as one line of plain, bounded text.

    Args:
        value: anything; non-strings are converted with `str` (and a failing `__str__`
            gives a placeholder, never an exception).
        limit: most characters returned; longer text ends with an ellipsis.

    Returns:
        The text with control and format characters escaped (``\\x1b``, ``\\u202e``), tabs
        and newlines included, cut to `limit` characters.
    """
    if not isinstance(value, str):
        try:
            value = str(value)
        except Exception:  # noqa: BLE001 - e.g. an int beyond the digit limit; never raise here
            value = f"<unprintable {type(value).__name__}>"
    # Escape only what can be shown: a megabyte of garbage costs no more than `limit`.
    head = value[: limit + 1]
    text = "".join(_escaped(ch) for ch in head)
    if len(text) > limit or len(value) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    return text


__all__ = ["DEFAULT_LIMIT", "printable"]
