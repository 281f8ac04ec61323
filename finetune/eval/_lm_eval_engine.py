"""lm-evaluation-harness's Hugging Face backend (`HFLM`) as a benchmark baseline.

It answers the benchmark's requests with the harness's own code, on the same model object:

- loss and choice requests go to `HFLM._loglikelihood_tokens`, the token-level half of
  `loglikelihood` (the public method only tokenises ``(context, continuation)`` strings first,
  and re-tokenising would change the requests: a context and its continuation tokenised apart
  are not the whole text tokenised at once). The answer is the summed log-probability of the
  continuation, from full ``[batch, seq, vocab]`` log-softmaxed logits.
- generation requests go to `HFLM.generate_until`, whose interface is text: each prompt is
  the decoded prompt ids, with the request's stop tokens as ``until`` strings,
  ``max_gen_toks``, greedy decoding and the repetition penalty; the answer is text. Decoded
  text does not always encode back to the same ids (a template's pieces tokenised apart), so
  the harness's batch tokeniser (`tok_batch_encode`) is given the request's own ids for its
  prompts: everything else (padding, masks, `model.generate`, stop strings) is the harness's.

Rows per batch follow the engine's token budget (longest row of the call), so both run under
the same memory cap. lm-eval is optional (the ``bench`` extra): `unavailable()` says why it
cannot be used, and nothing here imports it at module import.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

from finetune.eval.requests import (
    ChoiceRequest,
    ChoiceResult,
    GenerationRequest,
    LossRequest,
    LossResult,
    ProgressCallback,
)

logger = logging.getLogger(__name__)


def unavailable() -> str | None:
    """None when lm-eval's HF backend can be imported, else the reason it cannot."""
    try:
        import lm_eval.models.huggingface  # noqa: F401
    except ImportError as error:
        return f"lm-eval is not installed ({error}); pip install -e '.[bench]'"
    return None


def generated_text(tokenizer: Any, token_ids: Sequence[int], stop_ids: Sequence[int]) -> str:
    """Generated ids as `generate_until` reports them: decoded without special tokens, cut
    at the first stop string."""
    text = tokenizer.decode(list(token_ids), skip_special_tokens=True)
    for stop in _stop_strings(tokenizer, stop_ids):
        text = text.split(stop)[0]
    return text


def _stop_strings(tokenizer: Any, stop_ids: Sequence[int]) -> list[str]:
    strings = [tokenizer.decode([i], skip_special_tokens=False) for i in stop_ids]
    return [s for s in dict.fromkeys(strings) if s]


class LmEvalEngine:
    """Answers benchmark requests through `lm_eval.models.huggingface.HFLM`.

    Args:
        model: the causal LM (the same object the other engines use).
        tokenizer: its tokenizer; a copy is given to lm-eval, which may set a pad token.
        batch_tokens: rows per batch are ``batch_tokens // longest row`` (at least one).
        max_length: the harness's context window (left-truncation point); set it at least
            to the longest request so that nothing is cut.
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_tokens: int, max_length: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_tokens = batch_tokens
        self.max_length = max_length
        self._harness: dict[int, Any] = {}
        self.prompt_mismatches = 0  # generation prompts whose text does not encode back
        self._prompt_ids: dict[str, list[int]] = {}  # prompt text -> the request's own ids

    def _lm(self, rows: int) -> Any:
        if rows not in self._harness:
            self._harness[rows] = _exact_prompts_harness(self._prompt_ids)(
                pretrained=self.model,
                tokenizer=copy.deepcopy(self.tokenizer),
                batch_size=rows,
                max_length=self.max_length,
                logits_cache=True,
            )
        return self._harness[rows]

    def _rows(self, longest: int) -> int:
        return max(1, self.batch_tokens // max(1, longest))

    def loss(
        self, requests: Sequence[LossRequest], progress: ProgressCallback | None = None
    ) -> list[LossResult]:
        """Summed NLL of the scored tokens: minus the harness's continuation log-likelihood."""
        if not requests:
            return []
        lm = self._lm(self._rows(max(len(r.token_ids) for r in requests)))
        pairs = [
            (None, list(r.token_ids[: r.score_from]), list(r.token_ids[r.score_from :]))
            for r in requests
        ]
        answers = lm._loglikelihood_tokens(pairs, disable_tqdm=True)
        if progress:
            progress(len(requests))
        return [
            LossResult(sum_nll=-logprob, n_tokens=len(r.token_ids) - r.score_from)
            for (logprob, _), r in zip(answers, requests, strict=True)
        ]

    def choice_logprobs(
        self, requests: Sequence[ChoiceRequest], progress: ProgressCallback | None = None
    ) -> list[ChoiceResult]:
        """One one-token continuation per choice; the harness runs each context once."""
        if not requests:
            return []
        lm = self._lm(self._rows(max(len(r.prompt_ids) for r in requests) + 1))
        pairs = [(None, list(r.prompt_ids), [c]) for r in requests for c in r.choice_ids]
        answers = iter(lm._loglikelihood_tokens(pairs, disable_tqdm=True))
        if progress:
            progress(len(requests))
        return [
            ChoiceResult(logprobs=tuple(next(answers)[0] for _ in r.choice_ids)) for r in requests
        ]

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> list[str]:
        """Greedy continuations as text (see `generated_text` for the engines' side)."""
        if not requests:
            return []
        from lm_eval.api.instance import Instance

        instances = []
        self._prompt_ids.clear()
        for index, r in enumerate(requests):
            text = self.tokenizer.decode(list(r.prompt_ids), skip_special_tokens=False)
            if list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) != list(r.prompt_ids):
                self.prompt_mismatches += 1
            if self._prompt_ids.setdefault(text, list(r.prompt_ids)) != list(r.prompt_ids):
                raise ValueError("two prompts of one call decode to the same text")
            kwargs: dict[str, Any] = {
                "until": _stop_strings(self.tokenizer, r.stop_ids),
                "max_gen_toks": r.max_new_tokens,
                "do_sample": False,
            }
            if r.repetition_penalty != 1.0:
                kwargs["repetition_penalty"] = r.repetition_penalty
            if r.suppress_ids:
                kwargs["suppress_tokens"] = list(r.suppress_ids)
            instances.append(
                Instance(request_type="generate_until", doc={}, arguments=(text, kwargs), idx=index)
            )
        lm = self._lm(self._rows(max(len(r.prompt_ids) + r.max_new_tokens for r in requests)))
        texts = lm.generate_until(instances, disable_tqdm=True)
        if progress:
            progress(len(requests))
        return list(texts)


def _exact_prompts_harness(prompt_ids: dict[str, list[int]]) -> type:
    """`HFLM` whose batch tokeniser returns the requests' own ids for the prompts it knows."""
    import torch
    from lm_eval.models.huggingface import HFLM

    class ExactPromptsHFLM(HFLM):
        def tok_batch_encode(self, strings, padding_side="left", left_truncate_len=None,
                             truncation=False):
            if not all(s in prompt_ids for s in strings):
                return super().tok_batch_encode(strings, padding_side, left_truncate_len, truncation)
            rows = [prompt_ids[s] for s in strings]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):  # left padding, as the harness pads for generation
                ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
                mask[i, width - len(row):] = 1
            return ids, mask

    return ExactPromptsHFLM


__all__ = ["LmEvalEngine", "generated_text", "unavailable"]
