"""The model split in two: the decoder body (hidden states) and the output head (logits).

Splitting lets the engine send only the positions it scores through the vocabulary-sized head,
in chunks, instead of holding `[batch, seq, vocab]` logits. Architectures post-process logits
differently (Gemma soft-caps them, Cohere and Granite rescale them), so the split is checked
once against the model's own forward; if they disagree the engine falls back to full logits,
which is slower but always right.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from typing import Any

import torch

logger = logging.getLogger(__name__)

# Number of tokens of the probe sequence that checks the split head against model(...).logits.
_PROBE_TOKENS = 8


@functools.cache
def _cache_keyword_of(forward_owner: type) -> str:
    params = inspect.signature(forward_owner.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_keyword(module: torch.nn.Module) -> str:
    """The name under which `module.forward` takes the KV cache.

    transformers renamed ``past_key_values`` to ``cache`` (5.24 accepts both and warns on the
    old name, which goes in 5.40). The project allows any transformers >= 5, so the name is
    read from the forward signature, once per model class.
    """
    return _cache_keyword_of(type(module))


def returned_cache(output: Any) -> Any:
    """The KV cache a forward returned, under the output record's own field name (reading
    the old name on a new record would warn)."""
    if dataclasses.is_dataclass(output) and any(f.name == "cache" for f in dataclasses.fields(output)):
        return output.cache
    return output.past_key_values


class HeadBuffers:
    """Memory reused by the chunks of one loss batch: fp32 logits, the head's own-dtype output
    (the same block for an fp32 model) and the log-softmax, each `[rows, vocab]`."""

    def __init__(self, rows: int, vocab: int, dtype: torch.dtype, device: torch.device) -> None:
        self.logits = torch.empty((rows, vocab), dtype=torch.float32, device=device)
        self.native = (
            self.logits if dtype == torch.float32
            else torch.empty((rows, vocab), dtype=dtype, device=device)
        )
        self.logp = torch.empty((rows, vocab), dtype=torch.float32, device=device)


class SplitModel:
    """Body and head of a causal LM, with a full-logits fallback.

    In fallback mode `body` returns the logits themselves and `head` is the identity, so the
    callers need no second code path.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.fallback = False
        self._checked = False
        config = model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self._softcap = getattr(text_config, "final_logit_softcapping", None)
        # Cohere multiplies logits by `logit_scale`; Granite divides them by `logits_scaling`.
        self._scale = getattr(model, "logit_scale", None)
        if not isinstance(self._scale, (int, float)):
            self._scale = None
        self._divide = getattr(text_config, "logits_scaling", None)
        self._decoder = model.base_model
        self._lm_head = model.get_output_embeddings()
        if self._decoder is model or self._lm_head is None:
            self.fallback = True
            self._checked = True

    def body(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        *,
        position_ids: torch.Tensor | None = None,
        cache: object | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, object | None]:
        """Hidden states `[batch, seq, hidden]` (logits in fallback mode) and the KV cache."""
        self._check()
        module = self.model if self.fallback else self._decoder
        out = module(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **{cache_keyword(module): cache},
        )
        states = out.logits if self.fallback else out.last_hidden_state
        return states, (returned_cache(out) if use_cache else None)

    def head(self, hidden: torch.Tensor, *, upcast: bool = True) -> torch.Tensor:
        """Logits for hidden states `[..., hidden]` -> `[..., vocab]`: fp32, or with
        ``upcast=False`` in the dtype the model's own forward returns them."""
        if self.fallback:
            return hidden.float() if upcast else hidden
        # Same operations, in the same dtype and order, as the models' own forward.
        logits = self._lm_head(hidden)
        if self._scale is not None:
            logits = logits * self._scale
        if self._divide is not None:
            logits = logits / self._divide
        if self._softcap is not None:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits.float() if upcast else logits

    def head_buffers(self, rows: int) -> HeadBuffers | None:
        """Reusable outputs for `head_into` of up to `rows` positions (None: no plain head)."""
        weight = getattr(self._lm_head, "weight", None)
        plain = type(self._lm_head) is torch.nn.Linear and self._lm_head.bias is None
        if self.fallback or not plain or weight is None or torch.is_grad_enabled():
            return None  # (`out=` kernels refuse autograd; the engine runs without it)
        return HeadBuffers(rows, int(weight.shape[0]), weight.dtype, weight.device)

    def head_into(self, hidden: torch.Tensor, buffers: HeadBuffers) -> torch.Tensor:
        """`head(hidden)` (fp32, `[n, vocab]`) written into `buffers`' memory.

        The same values as `head`: the bias-free linear head is one `mm` into the buffer (the
        kernel `Linear` calls), and the post-processing runs in place in the same order. On a
        CPU a fresh `[chunk, vocab]` block is page-faulted in at every call, which costs as
        much as a fifth of the matmul (0.1 s per 400 MB); a reused block is not.
        """
        n = hidden.shape[0]
        native = buffers.native[:n]
        logits = torch.mm(hidden, self._lm_head.weight.t(), out=native)
        if self._scale is not None:
            logits.mul_(self._scale)
        if self._divide is not None:
            logits.div_(self._divide)
        if self._softcap is not None:
            logits.div_(self._softcap).tanh_().mul_(self._softcap)
        if buffers.logits is native:
            return logits
        return buffers.logits[:n].copy_(logits)

    def _check(self) -> None:
        if self._checked:
            return
        vocab = int(self._lm_head.weight.shape[0])
        ids = torch.arange(_PROBE_TOKENS, device=self.device).remainder(vocab)[None, :]
        mask = torch.ones_like(ids)
        try:
            expected = self.model(input_ids=ids, attention_mask=mask).logits.float()
            hidden = self._decoder(input_ids=ids, attention_mask=mask).last_hidden_state
            got = self.head(hidden)
            ok = got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-3, atol=1e-3)
        except (TypeError, AttributeError, ValueError) as error:
            logger.warning(
                "cannot split %s into body and head (%s)", type(self.model).__name__, error
            )
            ok = False
        # Set only once decided: an error that escapes (out of memory) leaves it to the retry.
        self._checked = True
        if not ok:
            logger.warning(
                "%s: split head disagrees with the model's logits; using full logits",
                type(self.model).__name__,
            )
            self.fallback = True


def chunked_nll(
    split: SplitModel,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    rows: torch.Tensor,
    n_rows: int,
    chunk: int,
) -> torch.Tensor:
    """Summed cross-entropy per row, computing at most `chunk` positions of logits at a time.

    Args:
        split: the model's head.
        hidden: `[n, hidden]` states at the positions that predict the scored tokens.
        targets: `[n]` scored token ids.
        rows: `[n]` which row each position belongs to.
        n_rows: number of rows.
        chunk: positions per head call; bounds the `[chunk, vocab]` fp32 logits held.

    Returns:
        `[n_rows]` float64 sums of negative log-likelihoods (nats).
    """
    sums = torch.zeros(n_rows, dtype=torch.float64, device=hidden.device)
    buffers = split.head_buffers(min(chunk, hidden.shape[0]))
    for start in range(0, hidden.shape[0], chunk):
        part = slice(start, start + chunk)
        if buffers is None:
            logits = split.head(hidden[part])  # [c, vocab] fp32
            nll = torch.nn.functional.cross_entropy(logits, targets[part], reduction="none")
        else:
            # cross_entropy's own arithmetic (log-softmax, then minus the target's entry),
            # into reused memory: the same values, without two fresh [c, vocab] blocks.
            logits = split.head_into(hidden[part], buffers)
            logp = torch.log_softmax(logits, dim=-1, out=buffers.logp[: logits.shape[0]])
            nll = logp.gather(1, targets[part, None]).squeeze(1).neg()
        sums.index_add_(0, rows[part], nll.double())
        del logits, nll
    return sums


def chunked_native_nll(
    split: SplitModel, hidden: torch.Tensor, targets: torch.Tensor, chunk: int
) -> torch.Tensor:
    """Per-token cross-entropy on logits in the model's own dtype, `chunk` positions at a time.

    Args:
        split: the model's head.
        hidden: `[n, hidden]` states at the positions that predict the scored tokens.
        targets: `[n]` scored token ids.
        chunk: positions per head call.

    Returns:
        `[n]` losses in the logits' dtype (bf16 for a bf16 model): the values the reference's
        `CrossEntropyLoss` averages (log-softmax is per position, so chunking changes nothing).
    """
    parts = []
    for start in range(0, hidden.shape[0], chunk):
        logits = split.head(hidden[start : start + chunk], upcast=False)  # [c, vocab]
        parts.append(
            torch.nn.functional.cross_entropy(
                logits, targets[start : start + chunk], reduction="none"
            )
        )
        del logits
    return torch.cat(parts)


def native_row_means(token_nll: torch.Tensor, counts: list[int]) -> list[float]:
    """Each row's mean of `token_nll` (`[n]`, rows consecutive, `counts` tokens each), reduced
    in its dtype by the same kernel as `CrossEntropyLoss`'s mean (`nll_loss` over the row's
    tokens in order), so a bf16 row gives the reference's bf16 value."""
    means, start = [], 0
    zeros = torch.zeros(max(counts, default=0), dtype=torch.long, device=token_nll.device)
    for n in counts:
        row = token_nll[start : start + n]
        # nll_loss(-x[:, None], 0) averages x with the reduction of the reference's loss.
        means.append(float(torch.nn.functional.nll_loss(-row[:, None], zeros[:n])))
        start += n
    return means
