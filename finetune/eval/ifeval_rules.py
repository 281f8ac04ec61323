"""Checkers for IF-eval rules (SPEC §7), one per rule kind, found through a registry.

Two rule sets, chosen by the protocol's `EvalRules.ifeval`: ``ours`` (this module) and
``reference`` (the reference validator's, `finetune.eval.ifeval_reference`). Pure string
functions: no model and no NLTK data (the reference's sentence splitter needs the ``nltk``
package, not its data). The rules themselves are drawn in `finetune.datasets.ifeval`.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence

from finetune.datasets import ifeval as kinds
from finetune.datasets.samples import IfEvalRule
from finetune.errors import ConfigError, UnknownIdError
from finetune.eval import ifeval_reference

# One word each: 3.14 and 1,000 (a number's inner dots and commas), U.S. and i.e. (letters
# joined by dots), don't (an inner apostrophe).
_WORD = re.compile(
    r"\d+(?:[.,]\d+)+|[^\W\d_](?:\.[^\W\d_])+\.?|\w+(?:['’]\w+)*"
)
_KEYWORD_EDGE = r"[^\W_]"  # a letter or digit: "_" joins no word to a keyword
DUPLICATE_RATIO = 0.6  # difflib ratio above which two responses are near-duplicates
_BULLET = re.compile(r"^\s*\*\s")
# Candidate sentence ends: an ellipsis or a run of . ! ?, then closing quotes or brackets,
# then whitespace or the end. A dot inside a token (3.14, e.g) is never a candidate.
_END = re.compile(r"(\.{2,}|…|[.!?]+)([\"'”’)\]]*)(?=\s|$)")
_LAST_TOKEN = re.compile(r"(\S+)$")
# Tokens ending in a dot that do not end a sentence (compared lower-cased, dot included).
_ABBREVIATIONS = frozenset(
    "e.g. i.e. mr. mrs. ms. dr. prof. st. jr. sr. vs. cf. approx. fig.".split()
)


def count_words(text: str) -> int:
    """Number of word tokens: runs of letters and digits; an inner apostrophe ("don't"), a
    number's inner dot or comma ("3.14", "1,000") or single letters joined by dots ("U.S.",
    "i.e.", "a.m.") keep a token whole, a hyphen splits it."""
    return len(_WORD.findall(text))


def split_sentences(text: str) -> list[str]:
    """Split `text` into sentences with a small rule-based splitter.

    A sentence ends at `.`, `!`, `?` or an ellipsis followed by whitespace or the end of the
    text, and at every line break (so bullet lines count on their own). Abbreviations such as
    "e.g." and "Mr." do not end a sentence, nor does an ellipsis followed by a lower-case
    word. Pieces without any word character are dropped.

    Args:
        text: Any text.

    Returns:
        The sentences, stripped, in order.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        start = 0
        for match in _END.finditer(line):
            if _ends_sentence(line, match):
                sentences.append(line[start : match.end()].strip())
                start = match.end()
        sentences.append(line[start:].strip())
    return [s for s in sentences if _WORD.search(s)]


def _ends_sentence(line: str, match: re.Match[str]) -> bool:
    mark = match.group(1)
    if mark.startswith("..") or mark == "…":
        following = line[match.end() :].lstrip()
        return not following[:1].islower()  # "wait... then" carries on
    if mark == ".":
        token = _LAST_TOKEN.search(line[: match.start()])
        if token and token.group(1).lstrip("(\"'“‘").lower() + "." in _ABBREVIATIONS:
            return False
    return True


def _keyword_count(rule: IfEvalRule, response: str) -> int:
    if not rule.keyword:
        raise ConfigError(f"rule {rule.kind!r} needs a keyword", kind=rule.kind)
    pattern = rf"(?<!{_KEYWORD_EDGE}){re.escape(rule.keyword)}(?!{_KEYWORD_EDGE})"
    return len(re.findall(pattern, response, flags=re.IGNORECASE))


def _n(rule: IfEvalRule) -> int:
    if rule.n is None:
        raise ConfigError(f"rule {rule.kind!r} needs n", kind=rule.kind)
    return rule.n


def _titlecase(c: str) -> bool:
    return unicodedata.category(c) == "Lt"  # ǅ: neither upper nor lower case


def _all_upper(response: str) -> bool:
    # Needs a cased letter: text with only uncased letters (中文) is neither upper nor lower.
    # A titlecase letter breaks both.
    return any(c.isupper() for c in response) and not any(
        c.islower() or _titlecase(c) for c in response
    )


def _all_lower(response: str) -> bool:
    return any(c.islower() for c in response) and not any(
        c.isupper() or _titlecase(c) for c in response
    )


def _closing(rule: IfEvalRule, response: str) -> bool:
    if not rule.phrase:
        raise ConfigError(f"rule {rule.kind!r} needs a phrase", kind=rule.kind)
    return response.strip().lower().endswith(rule.phrase.strip().lower())


def _bullet_lines(response: str) -> int:
    return sum(1 for line in response.splitlines() if _BULLET.match(line))


def _quoted(response: str) -> bool:
    text = response.strip()
    return len(text) > 1 and text.startswith('"') and text.endswith('"')


Checker = Callable[[IfEvalRule, str], bool]

# Upper/lower need at least one cased letter of their case, so no response satisfies both.
RULE_CHECKERS: dict[str, Checker] = {
    kinds.WORDS_AT_MOST: lambda r, t: count_words(t) <= _n(r),
    kinds.WORDS_AT_LEAST: lambda r, t: count_words(t) >= _n(r),
    kinds.SENTENCES_AT_MOST: lambda r, t: len(split_sentences(t)) <= _n(r),
    kinds.SENTENCES_AT_LEAST: lambda r, t: len(split_sentences(t)) >= _n(r),
    kinds.ALL_UPPER: lambda r, t: _all_upper(t),
    kinds.ALL_LOWER: lambda r, t: _all_lower(t),
    kinds.NO_COMMAS: lambda r, t: "," not in t,
    kinds.KEYWORD_INCLUDED: lambda r, t: _keyword_count(r, t) > 0,
    kinds.KEYWORD_EXACTLY: lambda r, t: _keyword_count(r, t) == _n(r),
    kinds.KEYWORD_FORBIDDEN: lambda r, t: _keyword_count(r, t) == 0,
    kinds.BULLETS_EXACTLY: lambda r, t: _bullet_lines(t) == _n(r),
    kinds.CLOSING_PHRASE: _closing,
    kinds.QUOTATION: lambda r, t: _quoted(t),
}


RULE_SETS: dict[str, dict[str, Checker]] = {
    "ours": RULE_CHECKERS,
    "reference": ifeval_reference.CHECKERS,
}


def _rule_set(name: str) -> dict[str, Checker]:
    try:
        return RULE_SETS[name]
    except KeyError:
        known = ", ".join(RULE_SETS)
        raise UnknownIdError(f"unknown IF-eval rule set {name!r}; known: {known}") from None


def check_rule(rule: IfEvalRule, response: str, *, rule_set: str = "ours") -> bool:
    """Whether `response` satisfies `rule`.

    Args:
        rule: The rule; its kind selects the checker.
        response: The model's generated text.
        rule_set: ``ours`` (`RULE_CHECKERS`) or ``reference`` (`ifeval_reference.CHECKERS`).

    Returns:
        True iff the rule holds.

    Raises:
        UnknownIdError: the rule kind or the rule set is not registered.
        ConfigError: the rule lacks the argument its kind needs (n, keyword or phrase).
    """
    checker = _rule_set(rule_set).get(rule.kind)
    if checker is None:
        raise kinds.unknown_rule_kind(rule.kind)
    return checker(rule, response)


def count_satisfied(rules: Iterable[IfEvalRule], response: str, *, rule_set: str = "ours") -> int:
    """Number of `rules` that `response` satisfies (see `check_rule`).

    Raises:
        UnknownIdError: a rule kind or the rule set is not registered.
        ConfigError: a rule lacks the argument its kind needs.
    """
    return sum(check_rule(rule, response, rule_set=rule_set) for rule in rules)


def build_prompt(question: str, rules: Sequence[IfEvalRule], *, rule_set: str = "ours") -> str:
    """The user turn asking `question` under `rules`, in the rule set's wording.

    Raises:
        UnknownIdError: a rule kind or the rule set is not registered.
    """
    _rule_set(rule_set)
    if rule_set == "reference":
        return ifeval_reference.build_prompt(question, rules)
    return kinds.build_ifeval_prompt(question, rules)


def near_duplicates(first: str, second: str, *, rule_set: str = "ours") -> bool:
    """Whether two responses are near-duplicates: difflib ratio above 0.6, with whitespace as
    junk (ours) or only space and tab (the reference's; newlines then count)."""
    _rule_set(rule_set)
    if rule_set == "reference":
        return ifeval_reference.near_duplicates(first, second)
    matcher = difflib.SequenceMatcher(lambda ch: ch.isspace(), first, second)
    return matcher.ratio() > DUPLICATE_RATIO
