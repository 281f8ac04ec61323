"""Untrusted text is escaped and bounded before it is kept or shown."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from finetune.text import printable


def test_terminal_escapes_and_bidi_overrides_are_shown_escaped():
    assert printable("ok\x1b[2Jgone") == "ok\\x1b[2Jgone"
    assert printable("abc\u202edcba") == "abc\\u202edcba"
    assert printable("two\nlines\r\tx") == "two\\x0alines\\x0d\\x09x"
    assert printable("plain [bold]markup[/bold] stays") == "plain [bold]markup[/bold] stays"


def test_length_is_bounded_with_an_ellipsis():
    assert printable("x" * 10, 5) == "xxxx…"
    assert printable("x" * 5, 5) == "xxxxx"
    assert len(printable("\x00" * 10_000_000, 50)) == 50


def test_non_strings_and_unprintable_objects_never_raise():
    class Hostile:
        def __str__(self):
            raise RuntimeError("no")

    assert printable(12) == "12"
    assert printable(Hostile()) == "<unprintable Hostile>"


@given(st.text(), st.integers(min_value=1, max_value=400))
def test_output_is_one_printable_line_within_the_limit(text, limit):
    out = printable(text, limit)
    assert len(out) <= limit
    assert out.isprintable() or all(ch.isprintable() or ch == " " for ch in out)
