"""IF-eval samples (SPEC §7): two questions sharing one list of checkable rules.

This module draws the rules, describes them and builds the prompts; the checkers live in
`finetune.eval.ifeval_rules`. Everything here is a pure function of the round seed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from random import Random

from finetune.datasets.samples import IfEvalRule, IfEvalSample
from finetune.errors import ConfigError, DataUnavailable, UnknownIdError

# XOR-ed into the round seed so this task's draws are independent of other tasks' draws
# ("IFEV" in ASCII). Changing it changes every sample: bump the task version if you do.
IFEVAL_SEED_XOR = 0x49464556

WORDS_AT_MOST = "words_at_most"
WORDS_AT_LEAST = "words_at_least"
SENTENCES_AT_MOST = "sentences_at_most"
SENTENCES_AT_LEAST = "sentences_at_least"
ALL_UPPER = "all_upper"
ALL_LOWER = "all_lower"
NO_COMMAS = "no_commas"
KEYWORD_INCLUDED = "keyword_included"
KEYWORD_EXACTLY = "keyword_exactly"
KEYWORD_FORBIDDEN = "keyword_forbidden"
BULLETS_EXACTLY = "bullets_exactly"
CLOSING_PHRASE = "closing_phrase"
QUOTATION = "quotation"

V1_KINDS = (
    WORDS_AT_MOST,
    WORDS_AT_LEAST,
    SENTENCES_AT_MOST,
    SENTENCES_AT_LEAST,
    ALL_UPPER,
    ALL_LOWER,
    NO_COMMAS,
)
V2_KINDS = V1_KINDS + (
    KEYWORD_INCLUDED,
    KEYWORD_EXACTLY,
    KEYWORD_FORBIDDEN,
    BULLETS_EXACTLY,
    CLOSING_PHRASE,
    QUOTATION,
)
KINDS_BY_VERSION = {1: V1_KINDS, 2: V2_KINDS}
RULE_COUNTS = {1: (1, 4), 2: (2, 5)}  # inclusive bounds on rules per sample
KEYWORD_KINDS = frozenset({KEYWORD_INCLUDED, KEYWORD_EXACTLY, KEYWORD_FORBIDDEN})

# Kinds never drawn together, because they contradict or make a natural answer impossible.
INCOMPATIBLE_KINDS = frozenset(
    frozenset(pair)
    for pair in (
        (WORDS_AT_MOST, WORDS_AT_LEAST),  # at most 25 vs at least 45 contradicts
        (WORDS_AT_MOST, SENTENCES_AT_LEAST),  # several sentences in 25 words is cramped
        (WORDS_AT_MOST, SENTENCES_AT_MOST),  # SPEC §7: at-most-words excludes sentence limits
        (WORDS_AT_MOST, BULLETS_EXACTLY),  # bullet markup eats a small word budget
        (WORDS_AT_MOST, CLOSING_PHRASE),  # so does a fixed closing phrase
        (WORDS_AT_LEAST, SENTENCES_AT_MOST),  # 45 words in one sentence is unnatural
        (SENTENCES_AT_MOST, SENTENCES_AT_LEAST),  # at most 1 vs at least 2 contradicts
        (SENTENCES_AT_MOST, BULLETS_EXACTLY),  # every bullet line counts as a sentence
        (SENTENCES_AT_MOST, CLOSING_PHRASE),  # the phrase is a sentence of its own
        (ALL_UPPER, ALL_LOWER),
        (CLOSING_PHRASE, QUOTATION),  # both claim the last characters of the response
    )
)

WORD_COUNTS = tuple(range(25, 50, 5))  # 25..45 step 5
CLOSING_PHRASES = (  # no commas, so they never clash with NO_COMMAS
    "Is there anything else I can help with?",
    "Let me know if you have any other questions.",
    "I hope this helps.",
    "That is my final answer.",
)

_STOPWORDS = frozenset(
    """
    about above after again against also although among answer because been before being
    below between both cannot correct could does doing down during each either even every
    following from further have having here hers herself himself however into itself just
    many more most much must myself neither once only onto other ours ourselves over same
    shall should since some such than that their theirs them themselves then there therefore
    these they this those though through thus under until upon very were what when where
    whether which while whom whose will with within without would your yours yourself
    """.split()
)
_ALPHA_WORD = re.compile(r"[a-z]+")
_MAX_DRAWS = 50  # redraws when a random draw dead-ends below the wanted rule count

_DESCRIPTIONS = {
    WORDS_AT_MOST: "Answer with at most {n} words.",
    WORDS_AT_LEAST: "Answer with at least {n} words.",
    SENTENCES_AT_MOST: "Use at most {n} sentence{s}.",
    SENTENCES_AT_LEAST: "Use at least {n} sentences.",
    ALL_UPPER: "Write your entire response in upper case letters.",
    ALL_LOWER: "Write your entire response in lower case letters, with no capitals.",
    NO_COMMAS: "Do not use any commas.",
    KEYWORD_INCLUDED: 'Include the word "{keyword}" in your response.',
    KEYWORD_EXACTLY: 'Use the word "{keyword}" exactly {n} time{s}.',
    KEYWORD_FORBIDDEN: 'Do not use the word "{keyword}".',
    BULLETS_EXACTLY: "Include exactly {n} markdown bullet point{s}, each on its own line "
    'starting with "* ".',
    CLOSING_PHRASE: 'End your response with the exact phrase "{phrase}" and nothing after it.',
    QUOTATION: "Wrap your entire response in double quotation marks.",
}


def unknown_rule_kind(kind: str) -> UnknownIdError:
    """The error for a rule kind that is not registered (lists the known kinds).

    Args:
        kind: The unknown kind.

    Returns:
        An `UnknownIdError` for the caller to raise.
    """
    near = difflib.get_close_matches(kind, V2_KINDS, n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    return UnknownIdError(
        f"unknown IF-eval rule kind {kind!r}; known: {', '.join(V2_KINDS)}.{hint}", kind=kind
    )


def rules_compatible(a: IfEvalRule, b: IfEvalRule) -> bool:
    """Whether two rules may share a sample.

    Two rules of one kind never may; nor a pair in `INCOMPATIBLE_KINDS`; nor two keyword
    rules on the same keyword (forbidden vs included contradicts, included vs exactly N is
    redundant), for either question.
    """
    if a.kind == b.kind or frozenset((a.kind, b.kind)) in INCOMPATIBLE_KINDS:
        return False
    if a.kind not in KEYWORD_KINDS or b.kind not in KEYWORD_KINDS:
        return True
    return all(a.for_question(i).keyword != b.for_question(i).keyword for i in (0, 1))


def extract_keywords(text: str) -> tuple[str, ...]:
    """Content words of an expected answer, in order of first appearance.

    Args:
        text: Answer text.

    Returns:
        Distinct lower-cased alphabetic words of >= 4 letters that are not stopwords.
    """
    words = (w for w in _ALPHA_WORD.findall(text.lower()) if len(w) >= 4)
    return tuple(dict.fromkeys(w for w in words if w not in _STOPWORDS))


def describe_rule(rule: IfEvalRule) -> str:
    """One plain English instruction for `rule`.

    Raises:
        UnknownIdError: the rule kind is not registered.
    """
    template = _DESCRIPTIONS.get(rule.kind)
    if template is None:
        raise unknown_rule_kind(rule.kind)
    plural = "" if rule.n == 1 else "s"
    return template.format(n=rule.n, keyword=rule.keyword, phrase=rule.phrase, s=plural)


def build_ifeval_prompt(question: str, rules: Sequence[IfEvalRule]) -> str:
    """The user turn: answer the quoted question while following the numbered rules.

    Raises:
        UnknownIdError: a rule kind is not registered.
    """
    lines = [
        f'Answer the following question: "{question}"',
        "",
        "Your answer must follow these rules:",
    ]
    lines += [f"{i}. {describe_rule(rule)}" for i, rule in enumerate(rules, start=1)]
    return "\n".join(lines)


def generate_ifeval(
    seed: int, count: int, qa_pairs: Sequence[tuple[str, str]], version: int = 2
) -> list[IfEvalSample]:
    """Draw `count` IF-eval samples.

    Each sample pairs two different questions with one list of rules (V2: 2-5 rules over all
    kinds; V1: 1-4 rules over `V1_KINDS`). A keyword rule names one keyword per question, each
    a content word of that question's own expected answer; when either answer has none, no
    keyword rule is drawn.

    Args:
        seed: Round seed; drawn with `Random(seed ^ IFEVAL_SEED_XOR)`.
        count: Number of samples (>= 0).
        qa_pairs: (question, expected answer) candidates; repeated questions count once.
            Their order matters for determinism.
        version: Rule set version, 1 or 2.

    Returns:
        `count` samples; `answers` holds the expected answers of the two questions.

    Raises:
        ValueError: `count` is negative.
        ConfigError: unknown `version`.
        DataUnavailable: fewer than two distinct questions.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if version not in KINDS_BY_VERSION:
        raise ConfigError(f"unknown IF-eval version {version}; known: 1, 2", version=version)
    pool = _distinct_questions(qa_pairs)
    if len(pool) < 2:
        raise DataUnavailable(
            f"IF-eval needs at least 2 distinct questions, got {len(pool)}", task="if_eval"
        )
    rng = Random(seed ^ IFEVAL_SEED_XOR)
    low, high = RULE_COUNTS[version]
    samples = []
    for _ in range(count):
        (q1, a1), (q2, a2) = (pool[i] for i in rng.sample(range(len(pool)), 2))
        keywords = (extract_keywords(a1), extract_keywords(a2))  # each question its own
        kinds = [k for k in KINDS_BY_VERSION[version] if all(keywords) or k not in KEYWORD_KINDS]
        rules = _draw_rules(rng, kinds, rng.randint(low, high), keywords)
        samples.append(IfEvalSample(questions=(q1, q2), rules=rules, answers=(a1, a2)))
    return samples


def _distinct_questions(qa_pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    first: dict[str, str] = {}
    for question, answer in qa_pairs:
        first.setdefault(question, answer)
    return list(first.items())


def _draw_rules(
    rng: Random, kinds: Sequence[str], wanted: int, keywords: tuple[Sequence[str], Sequence[str]]
) -> tuple[IfEvalRule, ...]:
    """Draw kinds without replacement, skipping any that clash with those already chosen.

    A draw can dead-end below `wanted` (an early pick excludes too much), so it is redrawn;
    the largest draw is kept if every attempt falls short.
    """
    best: list[IfEvalRule] = []
    for _ in range(_MAX_DRAWS):
        rules: list[IfEvalRule] = []
        candidates = list(kinds)
        while len(rules) < wanted and candidates:
            rule = _make_rule(rng, candidates.pop(rng.randrange(len(candidates))), keywords)
            if all(rules_compatible(rule, other) for other in rules):
                rules.append(rule)
        if len(rules) > len(best):
            best = rules
        if len(best) == wanted:
            break
    return tuple(best)


def _make_rule(rng: Random, kind: str, keywords: tuple[Sequence[str], Sequence[str]]) -> IfEvalRule:
    if kind in (WORDS_AT_MOST, WORDS_AT_LEAST):
        return IfEvalRule(kind, n=rng.choice(WORD_COUNTS))
    if kind == SENTENCES_AT_MOST:
        return IfEvalRule(kind, n=rng.randint(1, 3))
    if kind == SENTENCES_AT_LEAST:
        return IfEvalRule(kind, n=rng.randint(2, 3))
    if kind == KEYWORD_EXACTLY:
        n = rng.randint(1, 4)
        return IfEvalRule(kind, n=n, keywords=(rng.choice(keywords[0]), rng.choice(keywords[1])))
    if kind in (KEYWORD_INCLUDED, KEYWORD_FORBIDDEN):
        return IfEvalRule(kind, keywords=(rng.choice(keywords[0]), rng.choice(keywords[1])))
    if kind == BULLETS_EXACTLY:
        return IfEvalRule(kind, n=rng.randint(1, 3))
    if kind == CLOSING_PHRASE:
        return IfEvalRule(kind, phrase=rng.choice(CLOSING_PHRASES))
    if kind in (ALL_UPPER, ALL_LOWER, NO_COMMAS, QUOTATION):
        return IfEvalRule(kind)
    raise unknown_rule_kind(kind)
