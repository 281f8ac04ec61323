"""The batched engine: the same answers as `NaiveEngine`, in padded batches.

- Loss and choice requests are right-padded; only the positions that are scored go through
  the output head, in chunks, so `[batch, seq, vocab]` logits are never held. No attention
  mask is passed for right padding: causal attention already hides every pad from every real
  position (pads only follow them), and without a mask the attention kernels take their
  causal fast path (flash attention on CUDA; no `[rows, 1, seq, seq]` mask is built).
- Generation is left-padded, with position ids counted over real tokens only, so a padded row
  decodes exactly as it would alone. Greedy argmax with the KV cache; finished rows leave the
  batch. The decoding loop is written here on purpose: `model.generate` would read the
  miner-supplied `generation_config` (sampling, penalties, stop tokens).
- Rows that open with the same tokens are batched together, and a batch's common prefix is run
  once, its KV cache shared by the rows (see `_prefix`): loss scoring never reads a position
  inside the shared prefix, so the prefix is capped before the first scored position.
- Batches are cut by a token budget (see `batching`). On an out-of-memory error the budget is
  halved and the batch retried, down to one row; the reduced budget is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from finetune.errors import EvalFailed
from finetune.eval._forward import SplitModel, chunked_native_nll, chunked_nll, native_row_means
from finetune.eval._prefix import MIN_PREFIX_TOKENS, PrefixSharing, pad_rows
from finetune.eval.batching import Batch, longest_first, next_batch, prefix_groups, restore_order
from finetune.eval.requests import (
    ChoiceRequest,
    ChoiceResult,
    GenerationRequest,
    GenerationResult,
    LossRequest,
    LossResult,
    ProgressCallback,
)

logger = logging.getLogger(__name__)

R = TypeVar("R")
A = TypeVar("A")


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA OOM and for backends that report it as a plain RuntimeError."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


class BatchedEngine:
    """Answers engine requests in padded batches under an adaptive token budget.

    Args:
        model: a causal LM (transformers `PreTrainedModel`), already on `device`.
        device: where input tensors are created.
        batch_tokens: budget on padded tokens per batch (rows x longest row); for generation a
            row counts its prompt plus `max_new_tokens`.
        max_rows: optional cap on rows per batch.
        loss_chunk_tokens: scored positions sent through the output head at once; bounds the
            fp32 logits held to `loss_chunk_tokens x vocab`.
        share_prefixes: group rows by their opening tokens and run a batch's common prefix
            once (checked once per model against the plain forward; off if they disagree).
        loss_in_model_dtype: a loss request's mean is computed from logits in the model's own
            dtype by the reference's kernels (see `NaiveEngine`); `sum_nll` is then that mean
            times the token count. Default: fp32 logits, fp64 sums.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: str | torch.device = "cpu",
        batch_tokens: int = 8192,
        max_rows: int | None = None,
        loss_chunk_tokens: int = 1024,
        share_prefixes: bool = True,
        loss_in_model_dtype: bool = False,
    ) -> None:
        if batch_tokens < 1 or loss_chunk_tokens < 1 or (max_rows is not None and max_rows < 1):
            raise ValueError("batch_tokens, max_rows and loss_chunk_tokens must be >= 1")
        model.eval()
        self.model = model
        self.device = torch.device(device)
        self.batch_tokens = batch_tokens
        self.max_rows = max_rows
        self.loss_chunk_tokens = loss_chunk_tokens
        self.loss_in_model_dtype = loss_in_model_dtype
        self._split = SplitModel(model, self.device)
        pad = getattr(model.config, "pad_token_id", None)
        vocab = int(model.get_input_embeddings().weight.shape[0])
        # Padding is masked out, so any valid id will do; config.json is miner data, so an id
        # outside the embedding (which would fail every padded batch) is not used.
        self._pad_id = pad if isinstance(pad, int) and 0 <= pad < vocab else 0
        self._prefix = PrefixSharing(self._split, self._pad_id, enabled=share_prefixes)

    # ---- public API -------------------------------------------------------------------------

    @torch.inference_mode()
    def loss(
        self, requests: Sequence[LossRequest], progress: ProgressCallback | None = None
    ) -> list[LossResult]:
        """Summed NLL of each request's scored tokens, in input order."""
        # The last token predicts nothing, so it is never fed.
        lengths = [len(r.token_ids) - 1 for r in requests]
        keys = [r.token_ids for r in requests]
        return self._run(requests, lengths, keys, self._loss_batch, progress)

    @torch.inference_mode()
    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> list[GenerationResult]:
        """Greedy continuations, in input order."""
        lengths = [len(r.prompt_ids) + r.max_new_tokens for r in requests]
        keys = [r.prompt_ids for r in requests]
        return self._run(requests, lengths, keys, self._generate_batch, progress)

    @torch.inference_mode()
    def choice_logprobs(
        self, requests: Sequence[ChoiceRequest], progress: ProgressCallback | None = None
    ) -> list[ChoiceResult]:
        """Next-token log-probabilities of each request's choices, in input order."""
        lengths = [len(r.prompt_ids) for r in requests]
        keys = [r.prompt_ids for r in requests]
        return self._run(requests, lengths, keys, self._choice_batch, progress)

    # ---- batching and back-off --------------------------------------------------------------

    def _run(
        self,
        requests: Sequence[A],
        lengths: list[int],
        keys: list[tuple[int, ...]],
        answer: Callable[[list[A]], list[R]],
        progress: ProgressCallback | None,
    ) -> list[R]:
        if self._prefix.enabled:
            groups = prefix_groups(keys, lengths, key_tokens=MIN_PREFIX_TOKENS)
        else:
            groups = [longest_first(lengths)]
        answered: list[tuple[int, R]] = []
        for order in groups:
            start = 0
            while start < len(order):
                batch = next_batch(
                    order, lengths, start, batch_tokens=self.batch_tokens, max_rows=self.max_rows
                )
                results = self._attempt(answer, [requests[i] for i in batch.indices], batch)
                if results is None:
                    continue  # budget halved: cut this batch again
                answered.extend(zip(batch.indices, results, strict=True))
                start += batch.rows
                if progress:
                    progress(batch.rows)
        return restore_order(len(requests), answered)

    def _attempt(
        self, answer: Callable[[list[A]], list[R]], rows: list[A], batch: Batch
    ) -> list[R] | None:
        try:
            return answer(rows)
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
        # Outside the `except` block, so the traceback (and the tensors it holds) is gone.
        self._free_memory()
        if batch.rows == 1:
            raise EvalFailed(
                f"out of memory on a single row of {batch.max_len} tokens",
                reason="out_of_memory",
                tokens=batch.max_len,
            )
        self.batch_tokens = max(1, min(self.batch_tokens, batch.padded_tokens) // 2)
        logger.warning(
            "out of memory on %d rows x %d tokens; batch budget now %d tokens",
            batch.rows,
            batch.max_len,
            self.batch_tokens,
        )
        return None

    def _free_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ---- padding ------------------------------------------------------------------------------

    def _right_padded_states(
        self, seqs: Sequence[Sequence[int]], limit: int
    ) -> tuple[torch.Tensor, int]:
        """Body states of right-padded rows and the offset of their first column.

        With a shared prefix of ``P`` tokens (at most `limit`) the states start at position
        ``P``; without one, at 0.
        """
        prefix = self._prefix.usable_len(seqs, limit)
        if prefix:
            return self._prefix.right_padded(seqs, prefix), prefix
        ids, _ = pad_rows(seqs, self._pad_id, self.device, left=False)
        hidden, _ = self._split.body(ids, None)
        return hidden, 0

    # ---- the three request kinds --------------------------------------------------------------

    def _loss_batch(self, requests: list[LossRequest]) -> list[LossResult]:
        # Position t predicts token t+1: row b scores positions score_from-1 .. len-2, so a
        # shared prefix must end before the first scored position of every row.
        hidden, offset = self._right_padded_states(
            [r.token_ids[:-1] for r in requests], min(r.score_from for r in requests) - 1
        )  # [rows, seq - offset, hidden]
        rows, cols, targets = [], [], []
        for row, r in enumerate(requests):
            n = len(r.token_ids) - r.score_from
            rows += [row] * n
            cols += range(r.score_from - 1 - offset, len(r.token_ids) - 1 - offset)
            targets += r.token_ids[r.score_from :]
        rows_t = torch.tensor(rows, device=self.device)
        picked = hidden[rows_t, torch.tensor(cols, device=self.device)]  # [n, hidden]
        del hidden
        counts = [len(r.token_ids) - r.score_from for r in requests]
        if self.loss_in_model_dtype:
            token_nll = chunked_native_nll(
                self._split, picked, torch.tensor(targets, device=self.device), self.loss_chunk_tokens
            )
            means = native_row_means(token_nll, counts)
            return [LossResult(sum_nll=m * n, n_tokens=n) for m, n in zip(means, counts, strict=True)]
        sums = chunked_nll(
            self._split,
            picked,
            torch.tensor(targets, device=self.device),
            rows_t,
            len(requests),
            self.loss_chunk_tokens,
        )
        return [
            LossResult(sum_nll=float(s), n_tokens=n)
            for s, n in zip(sums.tolist(), counts, strict=True)
        ]

    def _choice_batch(self, requests: list[ChoiceRequest]) -> list[ChoiceResult]:
        # The last prompt position is read: a shared prefix leaves it in every row's suffix.
        hidden, offset = self._right_padded_states(
            [r.prompt_ids for r in requests], min(len(r.prompt_ids) for r in requests) - 1
        )  # [rows, seq - offset, hidden]
        last = torch.tensor([len(r.prompt_ids) - 1 - offset for r in requests], device=self.device)
        rows = torch.arange(len(requests), device=self.device)
        logprobs = torch.log_softmax(self._split.head(hidden[rows, last]), dim=-1)  # [rows, vocab]
        return [
            ChoiceResult(logprobs=tuple(logprobs[row, list(r.choice_ids)].tolist()))
            for row, r in enumerate(requests)
        ]

    def _generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return _GreedyBatch(self, requests).run()


class _GreedyBatch:
    """Greedy decoding of one left-padded batch; rows leave the batch when they finish."""

    def __init__(self, engine: BatchedEngine, requests: list[GenerationRequest]) -> None:
        self.split = engine._split
        self.prefix = engine._prefix
        self.requests = requests
        self.device = engine.device
        self.pad_id = engine._pad_id
        self.outputs: list[list[int]] = [[] for _ in requests]
        self.active = list(range(len(requests)))  # request index of each batch row

    def run(self) -> list[GenerationResult]:
        hidden, cache, mask, positions = self._prefill()
        logits = self.split.head(hidden[:, -1])  # [rows, vocab]
        seen = self._seen_prompt_tokens(logits.shape[-1])  # [rows, vocab] bool
        banned = self._suppressed(logits.shape[-1])  # [rows, vocab] bool, or None
        next_pos = positions[:, -1:] + 1  # [rows, 1]
        while True:
            logits = self._penalise(logits, seen)
            if banned is not None:
                logits = logits.masked_fill(banned, float("-inf"))
            tokens = torch.argmax(logits, dim=-1).tolist()
            keep = self._record(tokens)
            if not keep:
                break
            if len(keep) < len(self.active):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, seen, next_pos = mask[index], seen[index], next_pos[index]
                banned = banned[index] if banned is not None else None
                self.active = [self.active[k] for k in keep]
            step = torch.tensor([[tokens[k]] for k in keep], device=self.device)  # [rows, 1]
            seen.scatter_(1, step, True)
            mask = torch.cat([mask, torch.ones_like(step)], dim=1)
            hidden, cache = self.split.body(
                step, mask, position_ids=next_pos, cache=cache, use_cache=True
            )
            next_pos = next_pos + 1
            logits = self.split.head(hidden[:, -1])
        return [GenerationResult(token_ids=tuple(out)) for out in self.outputs]

    def _prefill(self) -> tuple[torch.Tensor, object, torch.Tensor, torch.Tensor]:
        """Run the prompts: `(hidden, cache, attention mask, positions)`, left-padded."""
        prompts = [r.prompt_ids for r in self.requests]
        prefix = self.prefix.usable_len(prompts, min(len(p) for p in prompts) - 1)
        if prefix:
            return self.prefix.left_padded(prompts, prefix)
        ids, mask = pad_rows(prompts, self.pad_id, self.device, left=True)
        # Positions count real tokens only, so left padding does not shift them.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [rows, prompt]
        hidden, cache = self.split.body(ids, mask, position_ids=positions, use_cache=True)
        return hidden, cache, mask, positions

    def _seen_prompt_tokens(self, vocab: int) -> torch.Tensor:
        seen = torch.zeros((len(self.requests), vocab), dtype=torch.bool, device=self.device)
        for row, r in enumerate(self.requests):
            seen[row, sorted(set(r.prompt_ids))] = True  # real tokens only, never padding
        return seen

    def _suppressed(self, vocab: int) -> torch.Tensor | None:
        if not any(r.suppress_ids for r in self.requests):
            return None
        banned = torch.zeros((len(self.requests), vocab), dtype=torch.bool, device=self.device)
        for row, r in enumerate(self.requests):
            ids = [i for i in r.suppress_ids if 0 <= i < vocab]
            if ids:
                banned[row, ids] = True
        return banned

    def _penalise(self, logits: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        # One python-scalar op per distinct penalty: the same arithmetic as NaiveEngine.
        penalties = [self.requests[i].repetition_penalty for i in self.active]
        for penalty in sorted(set(penalties)):
            if penalty == 1.0:
                continue
            rows = torch.tensor([p == penalty for p in penalties], device=self.device)[:, None]
            penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
            logits = torch.where(seen & rows, penalised, logits)
        return logits

    def _record(self, tokens: list[int]) -> list[int]:
        """Append each row's token unless it stops the row; the batch rows still running."""
        keep = []
        for row, (index, token) in enumerate(zip(self.active, tokens, strict=True)):
            request = self.requests[index]
            if token in request.stop_ids:
                continue
            self.outputs[index].append(token)
            if len(self.outputs[index]) < request.max_new_tokens:
                keep.append(row)
        return keep
