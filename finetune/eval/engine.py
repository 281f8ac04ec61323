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
- Batches are cut by a token budget (see `batching`), and loss and choice batches also where
  padding would outweigh what sharing a matmul saves. Which rows share a batch, how wide it
  is padded and which prefix it shares (its `Layout`) depend on the requests and the budget
  alone, never on the memory left: on an out-of-memory error the planned batch is run in
  slices of rows, each laid out as the whole batch (same width, same shared prefix), halving
  the slice down to one row; the smaller slice is kept for later batches. The attention
  kernels give a row the same values whatever other rows share its batch, so a back-off
  changes no attention output; what can still move is the last bit of a matmul whose row
  count changed (none in fp32 on the CPU kernels measured; see docs/validator.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from finetune.errors import EvalFailed
from finetune.eval._forward import SplitModel, chunked_native_nll, chunked_nll, native_row_means
from finetune.eval._prefix import MIN_PREFIX_TOKENS, PrefixSharing, pad_rows
from finetune.eval.batching import (
    MAX_PADDING,
    Batch,
    longest_first,
    next_batch,
    prefix_groups,
    restore_order,
    rows_that_fit,
)
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
S = TypeVar("S")


@dataclass(frozen=True)
class Layout:
    """How a planned batch is laid out; every slice of it is run the same way.

    Attributes:
        width: tokens every row is padded to (the batch's longest row).
        prefix: opening tokens shared by every row, computed once (0: none).
    """

    width: int
    prefix: int = 0


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
        # Set by an out-of-memory back-off: padded tokens one slice of a batch may hold.
        self.slice_tokens: int | None = None

    # ---- public API -------------------------------------------------------------------------

    @torch.inference_mode()
    def loss(
        self, requests: Sequence[LossRequest], progress: ProgressCallback | None = None
    ) -> list[LossResult]:
        """Summed NLL of each request's scored tokens, in input order."""
        # The last token predicts nothing, so it is never fed.
        lengths = [len(r.token_ids) - 1 for r in requests]
        keys = [r.token_ids for r in requests]
        return self._run(
            requests, lengths, keys, self._loss_layout, self._loss_states, self._loss_results,
            progress,
        )

    @torch.inference_mode()
    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> list[GenerationResult]:
        """Greedy continuations, in input order."""
        lengths = [len(r.prompt_ids) + r.max_new_tokens for r in requests]
        keys = [r.prompt_ids for r in requests]
        return self._run(
            requests, lengths, keys, self._generation_layout, self._generate_batch, _flatten,
            progress, padding_rule=False,  # decoding steps, not padding, dominate: full batches
        )

    @torch.inference_mode()
    def choice_logprobs(
        self, requests: Sequence[ChoiceRequest], progress: ProgressCallback | None = None
    ) -> list[ChoiceResult]:
        """Next-token log-probabilities of each request's choices, in input order."""
        lengths = [len(r.prompt_ids) for r in requests]
        keys = [r.prompt_ids for r in requests]
        return self._run(
            requests, lengths, keys, self._choice_layout, self._choice_states,
            self._choice_results, progress,
        )

    # ---- batching and back-off --------------------------------------------------------------

    def plan(
        self, lengths: list[int], keys: list[tuple[int, ...]], *, padding_rule: bool = True
    ) -> list[Batch]:
        """The batches of one call: prefix groups (when sharing), each cut longest first by
        the token budget (and the padding rule). Depends on nothing the memory decides."""
        if self._prefix.enabled:
            groups = prefix_groups(keys, lengths, key_tokens=MIN_PREFIX_TOKENS)
        else:
            groups = [longest_first(lengths)]
        batches = []
        for order in groups:
            start = 0
            while start < len(order):
                batch = next_batch(
                    order, lengths, start, batch_tokens=self.batch_tokens, max_rows=self.max_rows,
                    max_padding=MAX_PADDING if padding_rule else None,
                )
                batches.append(batch)
                start += batch.rows
        return batches

    def _run(
        self,
        requests: Sequence[A],
        lengths: list[int],
        keys: list[tuple[int, ...]],
        layout_of: Callable[[list[A]], Layout],
        states: Callable[[list[A], Layout], S],
        finish: Callable[[list[A], list[S]], list[R]],
        progress: ProgressCallback | None,
        *,
        padding_rule: bool = True,
    ) -> list[R]:
        """Plan the batches; for each, run the body (`states`, by slices after a back-off)
        and then the head over the whole batch (`finish`), so that the head's matmuls see
        the same rows whatever the slices were."""
        answered: list[tuple[int, R]] = []
        for batch in self.plan(lengths, keys, padding_rule=padding_rule):
            rows = [requests[i] for i in batch.indices]
            layout = self._whole(batch, layout_of, rows)
            parts = self._execute(states, rows, layout)
            results = self._whole(batch, finish, rows, parts)
            answered.extend(zip(batch.indices, results, strict=True))
            if progress:
                progress(batch.rows)
        return restore_order(len(requests), answered)

    def _whole(self, batch: Batch, step: Callable[..., R], *args: object) -> R:
        """`step(*args)` on the whole planned batch (the probes, the head): slicing the batch
        would change its layout, so running out of memory there fails the eval."""
        try:
            return step(*args)
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
        self._free_memory()
        raise EvalFailed(
            f"out of memory on the head or the probes of {batch.rows} rows x {batch.max_len} tokens",
            reason="out_of_memory",
            tokens=batch.max_len,
        )

    def _execute(
        self, states: Callable[[list[A], Layout], S], rows: list[A], layout: Layout
    ) -> list[S]:
        """`states` of a planned batch: one part per slice of rows (one slice unless an
        out-of-memory back-off made them smaller)."""
        parts: list[S] = []
        done = 0
        while done < len(rows):
            step = len(rows) - done
            if self.slice_tokens is not None:
                step = min(step, rows_that_fit(layout.width, self.slice_tokens))
            part = self._attempt(states, rows[done : done + step], layout)
            if part is not None:
                parts.append(part)
                done += step
        return parts

    def _attempt(
        self, states: Callable[[list[A], Layout], S], rows: list[A], layout: Layout
    ) -> S | None:
        try:
            return states(rows, layout)
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
        # Outside the `except` block, so the traceback (and the tensors it holds) is gone.
        self._free_memory()
        if len(rows) == 1:
            raise EvalFailed(
                f"out of memory on a single row of {layout.width} tokens",
                reason="out_of_memory",
                tokens=layout.width,
            )
        self.slice_tokens = max(1, len(rows) * layout.width // 2)
        logger.warning(
            "out of memory on %d rows x %d tokens; batches now run in slices of at most %d "
            "tokens (laid out as before, so the batches and their answers are unchanged)",
            len(rows),
            layout.width,
            self.slice_tokens,
        )
        return None

    def _free_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ---- layouts and padding --------------------------------------------------------------

    def _layout(self, seqs: Sequence[Sequence[int]], limit: int) -> Layout:
        """Width and shared prefix (at most `limit` tokens) of a planned batch of `seqs`."""
        width = max(len(s) for s in seqs)
        return Layout(width=width, prefix=self._prefix.usable_len(seqs, limit))

    def _loss_layout(self, requests: list[LossRequest]) -> Layout:
        # Position t predicts token t+1: row b scores positions score_from-1 .. len-2, so a
        # shared prefix must end before the first scored position of every row.
        seqs = [r.token_ids[:-1] for r in requests]
        return self._layout(seqs, min(r.score_from for r in requests) - 1)

    def _choice_layout(self, requests: list[ChoiceRequest]) -> Layout:
        # The last prompt position is read: a shared prefix leaves it in every row's suffix.
        prompts = [r.prompt_ids for r in requests]
        return self._layout(prompts, min(len(p) for p in prompts) - 1)

    def _generation_layout(self, requests: list[GenerationRequest]) -> Layout:
        return self._choice_layout(requests)  # type: ignore[arg-type]  # same prompt rule

    def _right_padded_states(
        self, seqs: Sequence[Sequence[int]], layout: Layout
    ) -> torch.Tensor:
        """Body states of right-padded rows, from position `layout.prefix` on."""
        if layout.prefix:
            return self._prefix.right_padded(seqs, layout.prefix, layout.width)
        ids, _ = pad_rows(seqs, self._pad_id, self.device, left=False, width=layout.width)
        hidden, _ = self._split.body(ids, None)
        return hidden

    # ---- the three request kinds --------------------------------------------------------------

    def _loss_states(self, requests: list[LossRequest], layout: Layout) -> torch.Tensor:
        """States at the positions predicting the scored tokens, rows in order: `[n, hidden]`."""
        offset = layout.prefix
        hidden = self._right_padded_states(
            [r.token_ids[:-1] for r in requests], layout
        )  # [rows, width - offset, hidden]
        rows, cols = [], []
        for row, r in enumerate(requests):
            rows += [row] * (len(r.token_ids) - r.score_from)
            cols += range(r.score_from - 1 - offset, len(r.token_ids) - 1 - offset)
        index = (torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device))
        return hidden[index]

    def _loss_results(
        self, requests: list[LossRequest], parts: list[torch.Tensor]
    ) -> list[LossResult]:
        picked = torch.cat(parts) if len(parts) > 1 else parts[0]  # [n, hidden]
        counts = [len(r.token_ids) - r.score_from for r in requests]
        targets = torch.tensor(
            [t for r in requests for t in r.token_ids[r.score_from :]], device=self.device
        )
        chunk = self.loss_chunk_tokens
        if self.loss_in_model_dtype:
            means = native_row_means(chunked_native_nll(self._split, picked, targets, chunk), counts)
            return [
                LossResult(sum_nll=m * n, n_tokens=n) for m, n in zip(means, counts, strict=True)
            ]
        rows = torch.arange(len(requests), device=self.device)
        rows = torch.repeat_interleave(rows, torch.tensor(counts, device=self.device))  # [n]
        sums = chunked_nll(self._split, picked, targets, rows, len(requests), chunk)
        return [
            LossResult(sum_nll=float(s), n_tokens=n)
            for s, n in zip(sums.tolist(), counts, strict=True)
        ]

    def _choice_states(self, requests: list[ChoiceRequest], layout: Layout) -> torch.Tensor:
        """The last prompt position's state of each row: `[rows, hidden]`."""
        hidden = self._right_padded_states([r.prompt_ids for r in requests], layout)
        # [rows, width - prefix, hidden]
        last = [len(r.prompt_ids) - 1 - layout.prefix for r in requests]
        rows = torch.arange(len(requests), device=self.device)
        return hidden[rows, torch.tensor(last, device=self.device)]

    def _choice_results(
        self, requests: list[ChoiceRequest], parts: list[torch.Tensor]
    ) -> list[ChoiceResult]:
        states = torch.cat(parts) if len(parts) > 1 else parts[0]
        logprobs = torch.log_softmax(self._split.head(states), dim=-1)  # [rows, vocab]
        return [
            ChoiceResult(logprobs=tuple(logprobs[row, list(r.choice_ids)].tolist()))
            for row, r in enumerate(requests)
        ]

    def _generate_batch(
        self, requests: list[GenerationRequest], layout: Layout
    ) -> list[GenerationResult]:
        return _GreedyBatch(self, requests, layout).run()


def _flatten(requests: list, parts: list[list[R]]) -> list[R]:
    return [result for part in parts for result in part]


class _GreedyBatch:
    """Greedy decoding of one left-padded batch; rows leave the batch when they finish."""

    def __init__(
        self, engine: BatchedEngine, requests: list[GenerationRequest], layout: Layout
    ) -> None:
        self.layout = layout
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
        if self.layout.prefix:
            return self.prefix.left_padded(prompts, self.layout.prefix, self.layout.width)
        ids, mask = pad_rows(prompts, self.pad_id, self.device, left=True, width=self.layout.width)
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
        """`logits` (`[rows, vocab]`, changed in place) with each row's penalty applied to its
        seen tokens: only those entries are gathered and put back, so a decoding step makes
        no pass over the whole vocabulary for it (on a CPU those passes cost a tenth of a
        step). One python-scalar op per distinct penalty: the same arithmetic as NaiveEngine.
        """
        penalties = [self.requests[i].repetition_penalty for i in self.active]
        if all(p == 1.0 for p in penalties):
            return logits
        rows, cols = seen.nonzero(as_tuple=True)  # [k] each: the seen entries
        for penalty in sorted(set(penalties) - {1.0}):
            match = torch.tensor([p == penalty for p in penalties], device=self.device)
            picked = match[rows]
            r, c = rows[picked], cols[picked]
            values = logits[r, c]
            logits[r, c] = torch.where(values > 0, values / penalty, values * penalty)
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
