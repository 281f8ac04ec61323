"""The plain per-sample engine: one sample per forward pass, full-vocabulary logits.

This is how the reference subnet scores models. It is the ground truth the batched engine is
tested against, and the baseline of the benchmarks. Keep it obviously correct, not fast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from finetune.eval.requests import (
    ChoiceRequest,
    ChoiceResult,
    GenerationRequest,
    GenerationResult,
    LossRequest,
    LossResult,
    ProgressCallback,
)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits: [vocab]; seen: [k] distinct token ids already in prompt or output."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    picked = logits[seen]
    logits = logits.clone()
    logits[seen] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits


class NaiveEngine:
    """Answers each request on its own, with no padding and no batching."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu") -> None:
        self.model = model
        self.device = torch.device(device)

    def _logits(self, ids: Sequence[int]) -> torch.Tensor:
        input_ids = torch.tensor([list(ids)], device=self.device)
        return self.model(input_ids=input_ids).logits[0].float()  # [seq, vocab]

    @torch.inference_mode()
    def loss(
        self, requests: Sequence[LossRequest], progress: ProgressCallback | None = None
    ) -> list[LossResult]:
        results = []
        for request in requests:
            logits = self._logits(request.token_ids)
            targets = torch.tensor(request.token_ids[request.score_from :], device=self.device)
            # logits[t] predicts token t+1
            predicted = logits[request.score_from - 1 : len(request.token_ids) - 1]
            nll = torch.nn.functional.cross_entropy(predicted, targets, reduction="sum")
            results.append(LossResult(sum_nll=float(nll), n_tokens=int(targets.numel())))
            if progress:
                progress(1)
        return results

    @torch.inference_mode()
    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> list[GenerationResult]:
        results = []
        for request in requests:
            ids = list(request.prompt_ids)
            output: list[int] = []
            step = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
            for _ in range(request.max_new_tokens):
                logits = step.logits[0, -1].float()
                seen = torch.tensor(sorted(set(ids)), device=self.device)
                logits = apply_repetition_penalty(logits, seen, request.repetition_penalty)
                token = int(torch.argmax(logits))
                if token in request.stop_ids:
                    break
                output.append(token)
                ids.append(token)
                # One token at a time against the cache, as `generate` does per sample.
                step = self.model(
                    input_ids=torch.tensor([[token]], device=self.device),
                    past_key_values=step.past_key_values,
                    use_cache=True,
                )
            results.append(GenerationResult(token_ids=tuple(output)))
            if progress:
                progress(1)
        return results

    @torch.inference_mode()
    def choice_logprobs(
        self, requests: Sequence[ChoiceRequest], progress: ProgressCallback | None = None
    ) -> list[ChoiceResult]:
        results = []
        for request in requests:
            logprobs = torch.log_softmax(self._logits(request.prompt_ids)[-1], dim=-1)
            picked = logprobs[list(request.choice_ids)]
            results.append(ChoiceResult(logprobs=tuple(float(x) for x in picked)))
            if progress:
                progress(1)
        return results
