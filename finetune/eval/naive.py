"""The plain per-sample engine: one sample per forward pass, full-vocabulary logits.

This is how the reference subnet scores models. It is the ground truth the batched engine is
tested against, and the baseline of the benchmarks. Keep it obviously correct, not fast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from finetune.eval._forward import cache_keyword, returned_cache
from finetune.eval.requests import (
    ChoiceRequest,
    ChoiceResult,
    GenerationRequest,
    GenerationResult,
    LossRequest,
    LossResult,
    ProgressCallback,
)


def suppress_tokens(logits: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """logits: [vocab]; the ids (those inside the vocabulary) set to -inf, so never chosen."""
    banned = [i for i in ids if 0 <= i < logits.shape[-1]]
    if not banned:
        return logits
    logits = logits.clone()
    logits[banned] = float("-inf")
    return logits


def native_mean_nll(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean cross-entropy as the reference computes it: in the logits' own dtype.

    logits: [n, vocab] as the model returned them (bf16 for a bf16 model); targets: [n]. The
    log-softmax and the mean run in that dtype on the device's kernels, so for a bf16 model the
    result is a bf16 value, exactly the reference's `CrossEntropyLoss()(logits, targets)`.
    """
    return float(torch.nn.functional.cross_entropy(logits, targets))


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits: [vocab]; seen: [k] distinct token ids already in prompt or output."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    picked = logits[seen]
    logits = logits.clone()
    logits[seen] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits


class NaiveEngine:
    """Answers each request on its own, with no padding and no batching.

    Args:
        model: a causal LM on `device`.
        device: where input tensors are created.
        loss_in_model_dtype: compute each loss request's mean cross-entropy on the logits in
            the model's own dtype (`native_mean_nll`, the reference's arithmetic); its
            `sum_nll` is then that mean times the token count. Default: fp32 logits, summed.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "cpu",
        *,
        loss_in_model_dtype: bool = False,
    ) -> None:
        self.model = model
        self.device = torch.device(device)
        self.loss_in_model_dtype = loss_in_model_dtype

    def _logits(self, ids: Sequence[int], *, upcast: bool = True) -> torch.Tensor:
        input_ids = torch.tensor([list(ids)], device=self.device)
        logits = self.model(input_ids=input_ids).logits[0]  # [seq, vocab]
        return logits.float() if upcast else logits

    @torch.inference_mode()
    def loss(
        self, requests: Sequence[LossRequest], progress: ProgressCallback | None = None
    ) -> list[LossResult]:
        results = []
        for request in requests:
            logits = self._logits(request.token_ids, upcast=not self.loss_in_model_dtype)
            targets = torch.tensor(request.token_ids[request.score_from :], device=self.device)
            n = int(targets.numel())
            # logits[t] predicts token t+1
            predicted = logits[request.score_from - 1 : len(request.token_ids) - 1]
            if self.loss_in_model_dtype:
                # mean * n is exact in a Python float, so LossResult.mean gives the mean back.
                results.append(LossResult(sum_nll=native_mean_nll(predicted, targets) * n, n_tokens=n))
            else:
                nll = torch.nn.functional.cross_entropy(predicted, targets, reduction="sum")
                results.append(LossResult(sum_nll=float(nll), n_tokens=n))
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
            keyword = cache_keyword(self.model)
            step = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
            for _ in range(request.max_new_tokens):
                logits = step.logits[0, -1].float()
                seen = torch.tensor(sorted(set(ids)), device=self.device)
                logits = apply_repetition_penalty(logits, seen, request.repetition_penalty)
                logits = suppress_tokens(logits, request.suppress_ids)
                token = int(torch.argmax(logits))
                if token in request.stop_ids:
                    break
                output.append(token)
                ids.append(token)
                # One token at a time against the cache, as `generate` does per sample.
                step = self.model(
                    input_ids=torch.tensor([[token]], device=self.device),
                    use_cache=True,
                    **{keyword: returned_cache(step)},
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
