"""Weight-norm check (SPEC §4), for every decoder layout.

Projections are found by name, not by architecture: a 2-D `...weight` tensor under a decoder
layer (`layers.<i>.`, `h.<i>.`, `blocks.<i>.`, `layer.<i>.`) is an attention or MLP projection,
and its type is the path after the layer index, e.g. `self_attn.q_proj` (Llama, Mistral, Qwen2,
Gemma), `self_attn.qkv_proj` / `mlp.gate_up_proj` (Phi3, fused), `attention.query_key_value`
(GPT-NeoX), `self_attention.dense` (Falcon). Norm weights are 1-D and embeddings sit outside
the layers, so neither is counted. Each tensor is read straight from its file in chunks of a
fixed number of elements, so memory does not depend on any tensor's shape or size.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from finetune.competition import NormLimits
from finetune.errors import ModelRejected
from finetune.storage.safetensors_header import DTYPE_BYTES, TensorEntry, read_layout

_LAYER_WEIGHT = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.(.+)\.weight$")
_NOT_PROJECTION = re.compile(r"(?:^|[._])(?:norm|ln|layernorm|embed)", re.IGNORECASE)
# The soft rule averages over projection types, so only the projection names that real decoder
# layouts use count as types there; an invented one (an unused extra tensor per layer) would
# otherwise dilute the mean. Every layer weight still counts for the hard limit.
SOFT_RULE_PROJECTIONS = frozenset({
    "q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "gate_proj", "up_proj", "down_proj",
    "gate_up_proj", "query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h", "fc1", "fc2",
    "out_proj", "c_attn", "c_proj", "c_fc", "query", "key", "value",
})  # fmt: skip
# Bounds the bytes read and the copies made while summing squares: 1M elements, ~18 MiB
# (the raw bytes, a float32 copy, its square, and the float64 upcast of the sum).
_ELEMENTS_PER_CHUNK = 1 << 20
# safetensors dtype name -> torch dtype attribute (a missing one has no norm here).
_TORCH_DTYPES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16", "I32": "int32",
    "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16", "BF16": "bfloat16",
    "F32": "float32", "F64": "float64", "C64": "complex64", "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
}  # fmt: skip


@dataclass(frozen=True)
class NormReport:
    """Per-projection statistics of a model's weight norms."""

    tensors_checked: int
    max_norm: float
    max_norm_tensor: str
    fraction_over_soft: dict[str, float] = field(default_factory=dict)  # type -> layer share

    @property
    def mean_fraction_over_soft(self) -> float:
        fractions = self.fraction_over_soft.values()
        return sum(fractions) / len(fractions) if fractions else 0.0


def projection_type(tensor_name: str) -> tuple[int, str] | None:
    """(layer index, projection type) for a decoder-layer weight name, else None."""
    match = _LAYER_WEIGHT.search(tensor_name)
    if match is None:
        return None
    kind = match.group(2)
    if _NOT_PROJECTION.search(kind.rsplit(".", 1)[-1]):
        return None
    return int(match.group(1)), kind


def frobenius_norm(tensor) -> float:
    """Frobenius norm of an in-memory tensor, in float64 over element chunks. NaN/inf: inf."""
    import torch

    flat = tensor.reshape(-1)
    total = 0.0
    for start in range(0, flat.numel(), _ELEMENTS_PER_CHUNK):
        total += _sum_squares(flat[start : start + _ELEMENTS_PER_CHUNK], torch)
    return math.sqrt(total) if math.isfinite(total) else math.inf


def _sum_squares(chunk, torch) -> float:
    if chunk.is_complex():
        chunk = chunk.abs()
    return float(chunk.to(torch.float32).square().sum(dtype=torch.float64))


def _torch_dtype(name: str):
    import torch

    dtype = getattr(torch, _TORCH_DTYPES.get(name, ""), None)
    if dtype is None:
        raise ModelRejected(f"cannot measure norms of {name} tensors", reason="weight_norms")
    return dtype


def stored_norm(handle, data_start: int, entry: TensorEntry) -> float:
    """Frobenius norm of one tensor read straight from its file, a bounded chunk at a time.

    Memory is bounded by the chunk, whatever the tensor's shape: a `[1, 5e8]` tensor is not
    one 500-million-element row to copy (the old row chunking), only so many bytes to read.
    """
    import torch

    dtype = _torch_dtype(entry.dtype)
    itemsize = DTYPE_BYTES[entry.dtype]
    chunk_bytes = _ELEMENTS_PER_CHUNK * itemsize
    total = 0.0
    handle.seek(data_start + entry.begin)
    remaining = entry.end - entry.begin
    while remaining > 0:
        data = handle.read(min(chunk_bytes, remaining))
        if not data:
            raise ModelRejected(f"tensor {entry.name!r} is cut short", reason="corrupt_safetensors")
        remaining -= len(data)
        total += _sum_squares(torch.frombuffer(bytearray(data), dtype=dtype), torch)
        if not math.isfinite(total):
            return math.inf
    return math.sqrt(total)


def measure_weight_norms(model_dir: str | Path) -> dict[str, dict[int, float]]:
    """Frobenius norm of every decoder-layer projection in the model's safetensors files.

    Returns:
        projection type -> layer index -> norm.

    Raises:
        ModelRejected: reason `corrupt_safetensors` or `too_many_tensors` (a file whose
            header does not validate), or `weight_norms` (a dtype with no norm).
    """
    norms: dict[str, dict[int, float]] = defaultdict(dict)
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        layout = read_layout(path)
        with open(path, "rb") as handle:
            for entry in layout.entries:
                found = projection_type(entry.name)
                if found is None or len(entry.shape) != 2:
                    continue
                layer, kind = found
                norm = stored_norm(handle, layout.data_start, entry)
                # Several tensors may map to one (type, layer), e.g. an unused decoy: the
                # largest counts, so an extra tensor can never hide the real weight's norm.
                previous = norms[kind].get(layer, -math.inf)
                norms[kind][layer] = norm if not norm <= previous else previous
    return dict(norms)


def summarize_norms(norms: dict[str, dict[int, float]], limits: NormLimits) -> NormReport:
    """Reduce measured norms to the figures the rule compares with its limits."""
    max_norm, max_name = -1.0, ""
    soft: dict[str, dict[int, float]] = defaultdict(dict)
    for kind, by_layer in sorted(norms.items()):
        key = kind.rsplit(".", 1)[-1]
        for layer, norm in sorted(by_layer.items()):
            if not norm <= max_norm:  # NaN-safe: anything not below the best replaces it
                max_norm, max_name = norm, f"layer {layer} {kind}"
            if key in SOFT_RULE_PROJECTIONS:
                previous = soft[key].get(layer, -math.inf)
                soft[key][layer] = norm if not norm <= previous else previous
    fractions = {
        key: sum(1 for norm in by_layer.values() if not norm <= limits.soft_limit) / len(by_layer)
        for key, by_layer in soft.items()
    }
    return NormReport(
        tensors_checked=sum(len(v) for v in norms.values()),
        max_norm=max_norm,
        max_norm_tensor=max_name,
        fraction_over_soft=fractions,
    )


def check_weight_norms(model_dir: str | Path, limits: NormLimits) -> NormReport:
    """Apply the weight-norm rule: no projection above the hard limit, and the mean over
    projection types of the share of layers above the soft limit at most the allowed fraction.

    Returns:
        The report (for logging) when the model passes.

    Raises:
        ModelRejected: reason `weight_norms`, with the offending figures in the message
            (`corrupt_safetensors` for a file the safetensors library refuses).
    """
    norms = measure_weight_norms(model_dir)
    if not norms:
        raise ModelRejected("no decoder-layer projection weights found", reason="weight_norms")
    report = summarize_norms(norms, limits)
    if not report.max_norm <= limits.hard_limit:
        raise ModelRejected(
            f"weight norm {report.max_norm:.1f} of {report.max_norm_tensor} exceeds the hard "
            f"limit {limits.hard_limit}",
            reason="weight_norms",
        )
    if report.mean_fraction_over_soft > limits.max_mean_fraction_over_soft:
        raise ModelRejected(
            f"mean share of layers above the soft norm limit {limits.soft_limit} is "
            f"{report.mean_fraction_over_soft:.3f} > {limits.max_mean_fraction_over_soft}",
            reason="weight_norms",
        )
    return report


__all__ = [
    "NormReport",
    "check_weight_norms",
    "frobenius_norm",
    "measure_weight_norms",
    "projection_type",
    "summarize_norms",
]
