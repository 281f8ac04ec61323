"""Weight-norm checks (SPEC §4): ours, for every decoder layout, and the reference's.

Ours (`check_weight_norms`, protocol ``next``):

Projections are found by name, not by architecture: a 2-D `...weight` tensor under a decoder
layer (`layers.<i>.`, `h.<i>.`, `blocks.<i>.`, `layer.<i>.`) is an attention or MLP projection,
and its type is the path after the layer index, e.g. `self_attn.q_proj` (Llama, Mistral, Qwen2,
Gemma), `self_attn.qkv_proj` / `mlp.gate_up_proj` (Phi3, fused), `attention.query_key_value`
(GPT-NeoX), `self_attention.dense` (Falcon). Norm weights are 1-D and embeddings sit outside
the layers, so neither is counted. Each tensor is read straight from its file in chunks of a
fixed number of elements, so memory does not depend on any tensor's shape or size.

The reference's (`check_reference_norms`, protocol ``reference-3.1``): the six weights per
layer that its rule reads of the loaded bf16 model (`model_shape.NormWalk`), each norm taken
after rounding the stored values to bf16 and rounded to bf16 itself, as
`weight.norm().item()` on a bf16 tensor gives it (torch accumulates in float32; we sum in
float64 and round to float32 first, which can differ only for a norm within 1e-7 of a bf16
rounding midpoint).
"""

from __future__ import annotations

import math
import re
import statistics
import struct
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


def _read_chunks(handle, data_start: int, entry: TensorEntry):
    """The tensor's values, a bounded chunk at a time, as torch tensors of its stored dtype."""
    import torch

    dtype = _torch_dtype(entry.dtype)
    chunk_bytes = _ELEMENTS_PER_CHUNK * DTYPE_BYTES[entry.dtype]
    handle.seek(data_start + entry.begin)
    remaining = entry.end - entry.begin
    while remaining > 0:
        data = handle.read(min(chunk_bytes, remaining))
        if not data:
            raise ModelRejected(f"tensor {entry.name!r} is cut short", reason="corrupt_safetensors")
        remaining -= len(data)
        yield torch.frombuffer(bytearray(data), dtype=dtype)


def stored_norm(handle, data_start: int, entry: TensorEntry) -> float:
    """Frobenius norm of one tensor read straight from its file, a bounded chunk at a time.

    Memory is bounded by the chunk, whatever the tensor's shape: a `[1, 5e8]` tensor is not
    one 500-million-element row to copy (the old row chunking), only so many bytes to read.
    """
    import torch

    total = 0.0
    for chunk in _read_chunks(handle, data_start, entry):
        total += _sum_squares(chunk, torch)
        if not math.isfinite(total):
            return math.inf
    return math.sqrt(total)


def bf16_round(value: float) -> float:
    """`value` as float32, then rounded to bfloat16 (nearest, ties to even): what `.item()`
    of a bf16 norm returns. NaN stays NaN, inf stays inf."""
    if math.isnan(value) or math.isinf(value):
        return value
    try:
        (bits,) = struct.unpack("<I", struct.pack("<f", value))
    except OverflowError:  # beyond float32: inf, as the float32 accumulation gives
        return math.copysign(math.inf, value)
    if (bits & 0x7F800000) == 0x7F800000:
        return struct.unpack("<f", struct.pack("<I", bits))[0]
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return struct.unpack("<f", struct.pack("<I", rounded & 0xFFFFFFFF))[0]


def reference_norm(handle, data_start: int, entry: TensorEntry) -> float:
    """The norm the reference sees: values loaded as bf16 (its `torch_dtype`), the norm of
    that bf16 tensor rounded to bf16. NaN values give NaN; inf values give inf."""
    import torch

    total = 0.0
    for chunk in _read_chunks(handle, data_start, entry):
        values = chunk.to(torch.bfloat16).to(torch.float64)
        total += float(values.square().sum())
    return bf16_round(math.sqrt(total)) if not math.isnan(total) else math.nan


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


def _reference_unsupported(why: str) -> ModelRejected:
    return ModelRejected(
        f"the reference's norm rule cannot run on this model ({why}): its validator fails "
        "here and never evaluates it",
        reason="norm_rule_unsupported",
    )


def _tensor_index(model_dir: Path, files: list[str]) -> dict[str, tuple[Path, TensorEntry, int]]:
    index: dict[str, tuple[Path, TensorEntry, int]] = {}
    for name in files:
        layout = read_layout(model_dir / name)
        for entry in layout.entries:
            index.setdefault(entry.name, (model_dir / name, entry, layout.data_start))
    return index


def _find_weight(index: dict, names: tuple[str, ...]):
    # A checkpoint may store a weight under any of its tied names, with or without the
    # base-model prefix `model.` (transformers adds or strips it on load).
    for name in names:
        for key in (name, name.removeprefix("model.")):
            if key in index:
                return index[key]
    return None


def reference_norm_values(model_dir: str | Path, walk, files: list[str]) -> list[tuple[str, float]]:
    """(projection type, reference norm) of each weight the reference's rule reads, in order.

    Raises:
        ModelRejected: `missing_weights` (a weight the rule reads is in no file; the reference
            would read random values), or a header reason of `read_layout`.
    """
    root = Path(model_dir)
    index = _tensor_index(root, files)
    values: list[tuple[str, float]] = []
    handles: dict[Path, object] = {}
    try:
        for kind, names in walk.weights:
            found = _find_weight(index, names)
            if found is None:
                raise ModelRejected(
                    f"no file holds {names[0] if names else kind!r}, which the norm rule reads",
                    reason="missing_weights",
                )
            path, entry, data_start = found
            handle = handles.get(path) or handles.setdefault(path, open(path, "rb"))  # noqa: SIM115
            values.append((kind, reference_norm(handle, data_start, entry)))
    finally:
        for handle in handles.values():
            handle.close()
    return values


def check_reference_norms(model_dir: str | Path, limits: NormLimits, walk, files: list[str]) -> None:
    """The reference's norm rule on the weights it reads (see the module docstring).

    Any norm above `limits.hard_limit` rejects at once (in reading order, so before a layout
    error further on); else per projection type the share of layers above
    `limits.soft_limit` is taken, and their `statistics.fmean` above
    `limits.max_mean_fraction_over_soft` rejects. Comparisons are the reference's: a NaN
    norm is above nothing.

    Args:
        model_dir: the model folder.
        limits: the competition's norm limits.
        walk: `model_shape.NormWalk` of the model.
        files: the weight files the reference loads (`hashing.reference_weight_files`).

    Raises:
        ModelRejected: `weight_norms`, `norm_rule_unsupported` (no such layout, or no
            layers: the reference's check crashes), `missing_weights`.
    """
    over: dict[str, int] = {}
    seen: dict[str, int] = {}
    for kind, norm in reference_norm_values(model_dir, walk, files):
        if norm > limits.hard_limit:
            raise ModelRejected(
                f"a {kind} weight norm of {norm:g} (bf16) is over the hard limit {limits.hard_limit:g}",
                reason="weight_norms",
            )
        over[kind] = over.get(kind, 0) + (norm > limits.soft_limit)
        seen[kind] = seen.get(kind, 0) + 1
    if walk.error is not None:
        raise _reference_unsupported(walk.error)
    if walk.layers == 0:
        raise _reference_unsupported("no decoder layers: the shares divide by zero")
    mean = statistics.fmean(over[kind] / seen[kind] for kind in seen)
    if mean > limits.max_mean_fraction_over_soft:
        raise ModelRejected(
            f"mean share of layers above the soft norm limit {limits.soft_limit:g} is "
            f"{mean:.3f} > {limits.max_mean_fraction_over_soft}",
            reason="weight_norms",
        )


__all__ = [
    "NormReport",
    "bf16_round",
    "check_reference_norms",
    "check_weight_norms",
    "frobenius_norm",
    "measure_weight_norms",
    "projection_type",
    "reference_norm",
    "reference_norm_values",
    "summarize_norms",
]
