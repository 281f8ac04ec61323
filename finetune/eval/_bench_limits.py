"""The physical limit of a benchmark: FLOPs a request needs, and what the machine's matmuls do.

FLOPs come from the model's config (a decoder of `layers` blocks, attention with grouped
key/value heads, a gated or plain MLP, an output head), counted the usual way: a multiply-add
is 2 FLOPs, norms, rotary embeddings and activations are left out (they are a few per cent
and are not matmuls). The count is what a request *needs*, whatever engine answers it:

- every fed token goes through the body (``2 x linear weights`` per token);
- causal attention costs ``4 x layers x heads x head_dim`` per (query, key) pair, and a
  sequence of ``n`` tokens has ``n (n + 1) / 2`` pairs;
- only the positions whose logits are read go through the head (``2 x hidden x vocab``):
  the scored tokens of a loss request, the last prompt position of a choice, every step of a
  generation. Logits an engine computes and throws away (padding, context positions) are
  not needed work, so they lower its utilisation.

The peak is measured in the same run, on the same shapes and dtype: `torch.nn.functional.linear`
with the engine's row count on each distinct weight shape of the model; the best rate is the
peak (the stricter choice: the mix of shapes a model runs is slower than its best shape).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from finetune.eval.requests import ChoiceRequest, GenerationRequest, LossRequest

# Model types whose MLP is a single up and down projection (no gate).
_PLAIN_MLP = frozenset({"gpt_neox", "gpt2", "gptj", "opt", "phi", "falcon", "starcoder2"})


@dataclass(frozen=True)
class ModelShape:
    """The sizes that set a decoder's FLOPs, read from its config."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    gated_mlp: bool

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """Read a transformers config (its text config for a multimodal one)."""
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = int(text.num_attention_heads)
        hidden = int(text.hidden_size)
        head_dim = getattr(text, "head_dim", None) or hidden // heads
        return cls(
            hidden=hidden,
            layers=int(text.num_hidden_layers),
            heads=heads,
            kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim),
            intermediate=int(getattr(text, "intermediate_size", None) or 4 * hidden),
            vocab=int(text.vocab_size),
            gated_mlp=text.model_type not in _PLAIN_MLP,
        )

    # ---- per-token costs ------------------------------------------------------------------

    @property
    def weight_shapes(self) -> tuple[tuple[int, int], ...]:
        """``(in, out)`` of each linear layer of one block, then the head's."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        mlp = ((h, i), (h, i), (i, h)) if self.gated_mlp else ((h, i), (i, h))
        return ((h, q), (h, kv), (h, kv), (q, h), *mlp, (h, self.vocab))

    @property
    def body_flops(self) -> int:
        """Linear FLOPs of one token through every block."""
        block = sum(a * b for a, b in self.weight_shapes[:-1])
        return 2 * self.layers * block

    @property
    def head_flops(self) -> int:
        """FLOPs of one position's logits."""
        return 2 * self.hidden * self.vocab

    def attention_flops(self, n: int, past: int = 0) -> int:
        """Scores and weighted sum of `n` new tokens attending causally after `past` cached."""
        pairs = n * past + n * (n + 1) // 2
        return 4 * self.layers * self.heads * self.head_dim * pairs

    def params(self) -> int:
        """Parameters of the blocks and one embedding matrix (norms left out)."""
        return self.body_flops // 2 + self.hidden * self.vocab

    # ---- per-request costs ----------------------------------------------------------------

    def loss_flops(self, r: LossRequest) -> int:
        fed = len(r.token_ids) - 1
        scored = len(r.token_ids) - r.score_from
        return fed * self.body_flops + self.attention_flops(fed) + scored * self.head_flops

    def choice_flops(self, r: ChoiceRequest) -> int:
        n = len(r.prompt_ids)
        return n * self.body_flops + self.attention_flops(n) + self.head_flops

    def generation_flops(self, r: GenerationRequest, generated: int) -> int:
        """The prompt, then one step per generated token after the first (its logits come
        from the prompt's last position)."""
        prompt = len(r.prompt_ids)
        steps = max(generated - 1, 0)
        attention = self.attention_flops(prompt) + self.attention_flops(steps, past=prompt)
        logits = (1 + steps) * self.head_flops
        return (prompt + steps) * self.body_flops + attention + logits


def call_flops(shape: ModelShape, kind: str, requests: Sequence[Any], results: Sequence[Any]) -> int:
    """FLOPs one engine call of `kind` (``loss``, ``choice``, ``generate``) needs."""
    if kind == "loss":
        return sum(shape.loss_flops(r) for r in requests)
    if kind == "choice":
        return sum(shape.choice_flops(r) for r in requests)
    return sum(
        shape.generation_flops(r, len(g.token_ids)) for r, g in zip(requests, results, strict=True)
    )


def matmul_peak(
    shape: ModelShape,
    *,
    dtype: torch.dtype,
    device: torch.device,
    rows: int = 4096,
    seconds: float = 0.5,
) -> dict[str, Any]:
    """Measured `F.linear` rate on each distinct weight shape of the model, `rows` tokens.

    Args:
        shape: the model's sizes.
        dtype: the model's dtype.
        device: where the model runs.
        rows: tokens per matmul (the engine's batch); the head is measured on at most 1024
            rows, the engine's chunk of logits.
        seconds: time spent on each shape after a warm-up call (the best call is kept).

    Returns:
        ``peak_gflops`` (best shape), ``by_shape`` (``"in x out"`` -> GFLOP/s), ``rows``
        and ``dtype``.
    """
    by_shape: dict[str, float] = {}
    generator = torch.Generator(device="cpu").manual_seed(0)
    for n_in, n_out in dict.fromkeys(shape.weight_shapes):
        m = min(rows, 1024) if n_out == shape.vocab else rows
        x = torch.randn(m, n_in, generator=generator).to(device=device, dtype=dtype)
        w = (torch.randn(n_out, n_in, generator=generator) * 0.02).to(device=device, dtype=dtype)
        by_shape[f"{n_in}x{n_out}"] = 2 * m * n_in * n_out / _best_time(x, w, device, seconds) / 1e9
        del x, w
    return {
        "peak_gflops": max(by_shape.values()),
        "by_shape": by_shape,
        "rows": rows,
        "dtype": str(dtype).removeprefix("torch."),
    }


@torch.inference_mode()
def _best_time(x: torch.Tensor, w: torch.Tensor, device: torch.device, seconds: float) -> float:
    torch.nn.functional.linear(x, w)  # warm-up: kernel choice, allocator growth
    best = float("inf")
    deadline = time.perf_counter() + seconds
    calls = 0
    while calls < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.nn.functional.linear(x, w)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
        calls += 1
    return best


__all__ = ["ModelShape", "call_flops", "matmul_peak"]
