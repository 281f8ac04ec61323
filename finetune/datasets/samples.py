"""The sample records loaders produce and tasks consume. Plain frozen data, no tokens yet."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MultipleChoiceSample:
    """`question` already contains the lettered options; `answer` is one of `choices`."""

    question: str
    answer: str
    choices: tuple[str, ...] = ("A", "B", "C", "D")


@dataclass(frozen=True)
class ReferenceSample:
    """Prompt (a single user turn, optional system prompt) and the expected answer text.

    `drop_if_longer`: a sample whose templated prompt plus reference exceeds the sequence
    length is left out of scoring instead of being truncated (CODEFORCES_COTS, SPEC §7).
    """

    prompt: str
    reference: str
    system: str | None = None
    drop_if_longer: bool = False


@dataclass(frozen=True)
class TextSample:
    text: str


@dataclass(frozen=True)
class IfEvalRule:
    """One rule of an IF-eval sample. `kind` names the checker; the other fields its argument.

    A keyword rule of a sample names one keyword per question in `keywords` (each drawn from
    that question's own answer); the rule each question is asked and checked under carries
    its own in `keyword` (see `for_question`).
    """

    kind: str
    n: int | None = None
    keyword: str | None = None
    phrase: str | None = None
    keywords: tuple[str, str] | None = None

    def for_question(self, index: int) -> IfEvalRule:
        """The rule as question `index` (0 or 1) of its sample is asked it."""
        if self.keywords is None:
            return self
        return IfEvalRule(self.kind, n=self.n, keyword=self.keywords[index], phrase=self.phrase)


@dataclass(frozen=True)
class IfEvalSample:
    """Two different questions sharing one list of rules (SPEC §7)."""

    questions: tuple[str, str]
    rules: tuple[IfEvalRule, ...]
    answers: tuple[str, str] = ("", "")  # expected answers, where keywords were taken from


@dataclass(frozen=True)
class ExactAnswerSample:
    """A question with acceptable answers (BoolQ: yes/no; MAWPS: a number)."""

    prompt: str
    answers: tuple[str, ...]
    kind: str = "text"  # "text" (case-insensitive word match) or "number"
    context: str = field(default="")


Sample = (
    MultipleChoiceSample
    | ReferenceSample
    | TextSample
    | IfEvalSample
    | ExactAnswerSample
)
