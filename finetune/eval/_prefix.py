"""Shared-prefix reuse: the tokens every row of a batch opens with are computed once.

Real prompts open alike: the chat template, a system prompt, a few-shot example. For a batch
whose rows share their first ``P`` tokens, the prefix goes through the model once (one row),
its KV cache is repeated to the batch rows, and only the suffixes are run, with positions
counted from ``P``. Every suffix token then attends to the keys and values a full forward would
have computed for the prefix, so the answers are those of the full rows. Callers cap ``P`` so
that every position whose hidden state they read lies in the suffix.

Whether an architecture's cache allows this (it can be repeated over rows, explicit positions
are honoured) is checked once, on a probe, against the plain forward; if they disagree, or the
probe raises, sharing is turned off and the engine runs full rows, as it does without a prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from finetune.eval._forward import SplitModel
from finetune.eval.batching import shared_prefix_len

logger = logging.getLogger(__name__)

# A prefix is shared only when it is long enough to pay for the extra forward pass: at least
# this many tokens, and saving at least this fraction of the batch's padded tokens.
MIN_PREFIX_TOKENS = 16
MIN_PREFIX_FRACTION = 0.1
_PROBE_TOKENS = 12
_PROBE_SPLIT = 6


def pad_rows(
    seqs: Sequence[Sequence[int]],
    pad_id: int,
    device: torch.device,
    *,
    left: bool,
    width: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`[rows, width]` ids and attention mask (1 = real token), padded left or right.

    `width` defaults to the longest row; a wider one keeps a slice of a planned batch laid
    out as the whole batch is (the attention kernels block the work by the row length).
    """
    width = max(max(len(s) for s in seqs), width or 0)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids.to(device), mask.to(device)


class PrefixSharing:
    """Runs a batch's common prefix once and its rows' suffixes against the repeated cache.

    Args:
        split: the model's body and head.
        pad_id: id used for padding (masked or causally hidden, so any valid id).
        enabled: False never shares (every batch runs full rows).
    """

    def __init__(self, split: SplitModel, pad_id: int, *, enabled: bool = True) -> None:
        self.split = split
        self.device = split.device
        self.pad_id = pad_id
        self.enabled = enabled
        self._checked = not enabled

    def usable_len(self, seqs: Sequence[Sequence[int]], limit: int) -> int:
        """Prefix length to share for this batch, at most `limit`; 0 when not worth it."""
        if not self.enabled or len(seqs) < 2:
            return 0
        prefix = min(shared_prefix_len(seqs), limit)
        padded = len(seqs) * max(len(s) for s in seqs)
        if prefix < MIN_PREFIX_TOKENS or (len(seqs) - 1) * prefix < MIN_PREFIX_FRACTION * padded:
            return 0
        self._check()
        return prefix if self.enabled else 0

    def right_padded(
        self, seqs: Sequence[Sequence[int]], prefix: int, width: int | None = None
    ) -> torch.Tensor:
        """Body states of each row's suffix `seqs[row][prefix:]`, right-padded: `[rows, S, H]`
        (``S = width - prefix`` when `width` is given, else the longest suffix).

        No attention mask, as in the plain loss path: causal attention hides the trailing pads
        from every real position.
        """
        cache = self._prefix_cache(seqs[0][:prefix], len(seqs))
        suffix_width = width - prefix if width else None
        ids, _ = pad_rows(
            [s[prefix:] for s in seqs], self.pad_id, self.device, left=False, width=suffix_width
        )
        positions = torch.arange(prefix, prefix + ids.shape[1], device=self.device)
        positions = positions[None, :].expand(len(seqs), -1)
        hidden, _ = self.split.body(ids, None, position_ids=positions, cache=cache, use_cache=True)
        return hidden

    def left_padded(
        self, seqs: Sequence[Sequence[int]], prefix: int, width: int | None = None
    ) -> tuple[torch.Tensor, object, torch.Tensor, torch.Tensor]:
        """Prefill of a generation batch whose suffixes are left-padded (to ``width - prefix``
        when `width` is given).

        The pads sit between the prefix and each suffix, hidden by the attention mask; the
        positions count real tokens only, as in the plain left-padded path.

        Returns:
            ``(hidden [rows, S, H], cache, mask [rows, prefix + S], positions [rows, S])``.
        """
        rows = len(seqs)
        cache = self._prefix_cache(seqs[0][:prefix], rows)
        ids, suffix_mask = pad_rows(
            [s[prefix:] for s in seqs], self.pad_id, self.device, left=True,
            width=width - prefix if width else None,
        )
        ones = torch.ones((rows, prefix), dtype=suffix_mask.dtype, device=self.device)
        mask = torch.cat([ones, suffix_mask], dim=1)
        positions = prefix + (suffix_mask.cumsum(-1) - 1).clamp(min=0)
        hidden, cache = self.split.body(
            ids, mask, position_ids=positions, cache=cache, use_cache=True
        )
        return hidden, cache, mask, positions

    def _prefix_cache(self, prefix: Sequence[int], rows: int) -> object:
        ids = torch.tensor([list(prefix)], dtype=torch.long, device=self.device)
        positions = torch.arange(len(prefix), device=self.device)[None, :]
        _, cache = self.split.body(
            ids, torch.ones_like(ids), position_ids=positions, use_cache=True
        )
        cache.batch_repeat_interleave(rows)  # type: ignore[union-attr]
        return cache

    def _check(self) -> None:
        """Compare shared-prefix states with the plain forward once; turn sharing off if off."""
        if self._checked:
            return
        self._checked = True
        vocab = int(self.split.model.get_input_embeddings().weight.shape[0])
        ids = [(7 * i + 3) % vocab for i in range(_PROBE_TOKENS)]
        short = ids[: _PROBE_TOKENS - 2]
        try:
            full, _ = self.split.body(torch.tensor([ids], device=self.device), None)
            got = self.right_padded([ids, short], _PROBE_SPLIT)
            want = full[0, _PROBE_SPLIT:]
            n_short = len(short) - _PROBE_SPLIT
            ok = _close(got[0], want) and _close(got[1, :n_short], want[:n_short])
        except (TypeError, AttributeError, ValueError, NotImplementedError, RuntimeError) as error:
            if "out of memory" in str(error).lower():
                self._checked = False  # not decided: probe again on the retried batch
                raise
            logger.warning(
                "%s: cannot share prompt prefixes (%s)", type(self.split.model).__name__, error
            )
            ok = False
        if not ok:
            logger.warning(
                "%s: shared-prefix states disagree with the plain forward; running full rows",
                type(self.split.model).__name__,
            )
            self.enabled = False


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Relative L2 distance within rounding: a broken cache or position is off by O(1)."""
    tol = 1e-3 if want.dtype in (torch.float32, torch.float64) else 5e-2
    want = want.float()
    return bool(
        torch.linalg.vector_norm(got.float() - want) <= tol * torch.linalg.vector_norm(want)
    )
