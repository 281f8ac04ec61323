"""What a task asks of a model, and what it gets back: small frozen records.

A task turns samples into requests; an engine answers a list of requests with a list of
results in the same order; the task scores the results. The engine knows nothing of tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

# Called with the number of requests just completed, so callers can drive a progress bar.
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class LossRequest:
    """Score the tokens `token_ids[score_from:]`, each predicted from all tokens before it.

    ``score_from`` is at least 1 (the first token has nothing to be predicted from).
    Reference loss: context + reference, ``score_from = len(context)``.
    Text loss: a document, ``score_from = 1``.
    ``n_bytes``: the UTF-8 bytes of the text the scored tokens stand for, when the loss is
    counted per byte (`EvalRules.loss_unit`); 0 when it is not. Engines ignore it.
    """

    token_ids: tuple[int, ...]
    score_from: int
    n_bytes: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.score_from < len(self.token_ids):
            raise ValueError(
                f"score_from={self.score_from} must be in [1, {len(self.token_ids)}) "
                "so at least one token is scored"
            )


@dataclass(frozen=True)
class LossResult:
    sum_nll: float  # summed negative log-likelihood (nats) over the scored tokens
    n_tokens: int

    @property
    def mean(self) -> float:
        return self.sum_nll / self.n_tokens


@dataclass(frozen=True)
class GenerationRequest:
    """Greedy continuation of `prompt_ids`.

    Decoding stops after `max_new_tokens` or when a token in `stop_ids` is produced (the stop
    token is not returned). The repetition penalty follows the usual rule: for every distinct
    token already in prompt or output, a positive logit is divided by the penalty and a
    negative one multiplied. Padding never counts as "already seen". Tokens in `suppress_ids`
    are never chosen (their logits are -inf), as `min_new_tokens` bans EOS in `generate`.
    """

    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    repetition_penalty: float = 1.0
    stop_ids: tuple[int, ...] = ()
    suppress_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError("a generation prompt needs at least one token")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be positive")


@dataclass(frozen=True)
class GenerationResult:
    token_ids: tuple[int, ...]  # generated tokens, without the prompt and the stop token


@dataclass(frozen=True)
class ChoiceRequest:
    """Log-probabilities of candidate next tokens after `prompt_ids` (one forward pass)."""

    prompt_ids: tuple[int, ...]
    choice_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.prompt_ids or not self.choice_ids:
            raise ValueError("a choice request needs a prompt and at least one choice")


@dataclass(frozen=True)
class ChoiceResult:
    logprobs: tuple[float, ...]  # one per choice, log-softmax over the whole vocabulary

    @property
    def best(self) -> int:
        """Index of the most likely choice (the first on ties)."""
        return max(range(len(self.logprobs)), key=lambda i: (self.logprobs[i], -i))


class Engine(Protocol):
    """Answers requests in order. Implementations: the batched engine and the naive one."""

    def loss(
        self, requests: Sequence[LossRequest], progress: ProgressCallback | None = None
    ) -> list[LossResult]: ...

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> list[GenerationResult]: ...

    def choice_logprobs(
        self, requests: Sequence[ChoiceRequest], progress: ProgressCallback | None = None
    ) -> list[ChoiceResult]: ...
