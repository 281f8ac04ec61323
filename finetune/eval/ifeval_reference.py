"""The reference validator's IF-eval rules (protocol `reference-3.1`, `EvalRules.ifeval`).

Its prompt and rule texts, and what each rule checks, fact by fact (finetuning 3.1.0,
`finetune/eval/if_eval/`); `finetune.eval.ifeval_rules` holds ours. The checks are plain
string functions of the response exactly as decoded (nothing is stripped):

- words: `str.split()` pieces (any whitespace run splits; punctuation-only pieces count);
- sentences: an *untrained* Punkt splitter (NLTK's algorithm without trained parameters, so
  no abbreviation list: ``Dr. Smith went home.`` is two sentences; newlines never split);
- upper / lower case: `str.isupper()` / `str.islower()` (at least one cased character);
- keywords: the response's words after deleting every ASCII punctuation character, compared
  lower-cased with the keyword lower-cased (a keyword holding ASCII punctuation never
  matches); "exactly N" is an exact count;
- bullets: lines (`str.splitlines`) whose left-stripped text starts with ``*``;
- closing phrase: the lower-cased response ends with the lower-cased phrase;
- quotation: the response starts and ends with ``"``.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Callable, Sequence
from functools import lru_cache

from finetune.datasets import ifeval as kinds
from finetune.datasets.samples import IfEvalRule
from finetune.errors import ConfigError

PROMPT_HEADER = (
    "Please answer the question below, denoted between quotes. "
    "Your response must follow these rules:\n"
)
_DELETE_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)
DUPLICATE_RATIO = 0.6  # difflib ratio above which two responses are near-duplicates
_JUNK = " \t"  # the reference's junk characters: newlines are not junk


def _n(rule: IfEvalRule) -> int:
    if rule.n is None:
        raise ConfigError(f"rule {rule.kind!r} needs n", kind=rule.kind)
    return rule.n


def _keyword(rule: IfEvalRule) -> str:
    if not rule.keyword:
        raise ConfigError(f"rule {rule.kind!r} needs a keyword", kind=rule.kind)
    return rule.keyword


def _phrase(rule: IfEvalRule) -> str:
    if not rule.phrase:
        raise ConfigError(f"rule {rule.kind!r} needs a phrase", kind=rule.kind)
    return rule.phrase


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


_TEXTS: dict[str, Callable[[IfEvalRule], str]] = {
    kinds.WORDS_AT_MOST: lambda r: (
        f"The response must be no more than {_n(r)} {_plural(_n(r), 'word', 'words')}."
    ),
    kinds.WORDS_AT_LEAST: lambda r: (
        f"The response must be at least {_n(r)} {_plural(_n(r), 'word', 'words')}."
    ),
    kinds.SENTENCES_AT_MOST: lambda r: (
        f"The response must be no more than {_n(r)} {_plural(_n(r), 'sentence', 'sentences')}."
    ),
    kinds.SENTENCES_AT_LEAST: lambda r: (
        f"The response must be at least {_n(r)} {_plural(_n(r), 'sentence', 'sentences')}."
    ),
    kinds.ALL_UPPER: lambda r: "All letters in the response must be uppercase.",
    kinds.ALL_LOWER: lambda r: "All letters in the response must be lowercase.",
    kinds.NO_COMMAS: lambda r: "Do not use any commas in your response.",
    kinds.KEYWORD_INCLUDED: lambda r: f'The word "{_keyword(r)}" must be included in the response.',
    kinds.KEYWORD_EXACTLY: lambda r: (
        f'Include the word "{_keyword(r)}" {_n(r)} {_plural(_n(r), "time", "times")}.'
    ),
    kinds.KEYWORD_FORBIDDEN: lambda r: (
        f'The word "{_keyword(r)}" must not be included in the response.'
    ),
    kinds.BULLETS_EXACTLY: lambda r: (
        f"The response must contain exactly {_n(r)} '*' "
        f"{_plural(_n(r), 'bullet point', 'bullet points')} in markdown format."
    ),
    kinds.CLOSING_PHRASE: lambda r: f'End your response with the exact phrase "{_phrase(r)}"',
    kinds.QUOTATION: lambda r: "Wrap your entire response in double quotation marks.",
}


def rule_text(rule: IfEvalRule) -> str:
    """The reference's instruction for `rule` (as asked for the question it is checked on).

    Raises:
        UnknownIdError: the rule kind is not registered.
        ConfigError: the rule lacks the argument its kind needs.
    """
    text = _TEXTS.get(rule.kind)
    if text is None:
        raise kinds.unknown_rule_kind(rule.kind)
    return text(rule)


def build_prompt(question: str, rules: Sequence[IfEvalRule]) -> str:
    """The reference's user turn: a header, the numbered rules, a blank line, the quoted
    question and a final newline."""
    numbered = "\n".join(f"{i}. {rule_text(rule)}" for i, rule in enumerate(rules, start=1))
    return f'{PROMPT_HEADER}{numbered}\n\n"{question}"\n'


def count_words(text: str) -> int:
    """Whitespace-separated pieces, punctuation-only ones included."""
    return len(text.split())


@lru_cache(maxsize=1)
def _punkt():
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer()  # untrained: no abbreviations, no collocations


def count_sentences(text: str) -> int:
    """Sentences found by an untrained Punkt splitter (needs the ``nltk`` package, no data)."""
    return len(_punkt().tokenize(text))


def count_bullets(text: str) -> int:
    """Lines whose left-stripped text starts with ``*`` (``*one`` and ``**bold**`` count)."""
    return sum(1 for line in text.splitlines() if line.lstrip().startswith("*"))


def keyword_words(text: str) -> list[str]:
    """The response's words as keyword rules see them: ASCII punctuation deleted, lower-cased."""
    return [w.lower() for w in text.translate(_DELETE_ASCII_PUNCTUATION).split()]


def _keyword_count(rule: IfEvalRule, text: str) -> int:
    return keyword_words(text).count(_keyword(rule).lower())


CHECKERS: dict[str, Callable[[IfEvalRule, str], bool]] = {
    kinds.WORDS_AT_MOST: lambda r, t: count_words(t) <= _n(r),
    kinds.WORDS_AT_LEAST: lambda r, t: count_words(t) >= _n(r),
    kinds.SENTENCES_AT_MOST: lambda r, t: count_sentences(t) <= _n(r),
    kinds.SENTENCES_AT_LEAST: lambda r, t: count_sentences(t) >= _n(r),
    kinds.ALL_UPPER: lambda r, t: t.isupper(),
    kinds.ALL_LOWER: lambda r, t: t.islower(),
    kinds.NO_COMMAS: lambda r, t: "," not in t,
    kinds.KEYWORD_INCLUDED: lambda r, t: _keyword_count(r, t) > 0,
    kinds.KEYWORD_EXACTLY: lambda r, t: _keyword_count(r, t) == _n(r),
    kinds.KEYWORD_FORBIDDEN: lambda r, t: _keyword_count(r, t) == 0,
    kinds.BULLETS_EXACTLY: lambda r, t: count_bullets(t) == _n(r),
    kinds.CLOSING_PHRASE: lambda r, t: t.lower().endswith(_phrase(r).lower()),
    kinds.QUOTATION: lambda r, t: t.startswith('"') and t.endswith('"'),
}


def similarity(first: str, second: str) -> float:
    """difflib's ratio with only space and tab as junk (its automatic junk heuristic on)."""
    return difflib.SequenceMatcher(lambda ch: ch in _JUNK, first, second).ratio()


def near_duplicates(first: str, second: str) -> bool:
    """Whether two responses count as the same answer (ratio above 0.6)."""
    return similarity(first, second) > DUPLICATE_RATIO


__all__ = [
    "CHECKERS",
    "build_prompt",
    "count_bullets",
    "count_sentences",
    "count_words",
    "keyword_words",
    "near_duplicates",
    "rule_text",
    "similarity",
]
