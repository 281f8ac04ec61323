"""Merge same-architecture models into one: linear, task arithmetic, TIES, DARE, SLERP.

Miners use it to combine fine-tunes of one base (SPEC §9). The merge streams: for each tensor
name it loads that tensor from every input, computes in float32, writes the result and frees
it, so memory stays near (models + 1) tensors whatever the model size. Inputs are checked
first (architecture, tensor names and shapes, tokenizers) and every difference is reported in
one error. Only safetensors are read; pickle weights are refused.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from finetune.errors import ConfigError
from finetune.mining._merge_io import (
    FLOAT_DTYPES,
    INDEX_FILE,
    ITEMSIZE,
    TOKENIZER_FILES,
    ModelFiles,
    TensorReader,
    check_compatible,
    copy_side_files,
    open_model,
)
from finetune.mining._merge_methods import MergeMethod, MergeParams, get_method, known_methods
from finetune.mining._merge_writer import TORCH_DTYPE_CODES, OutputTensor, ShardedWriter

logger = logging.getLogger(__name__)

OUTPUT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3  # 2 GiB, the usual hub shard size
REPORT_FILE = "merge_report.json"

__all__ = ["MergeReport", "merge_models", "known_methods", "OUTPUT_DTYPES", "REPORT_FILE"]


class MergeReport(BaseModel):
    """What a merge did; also written as `merge_report.json` beside the merged weights."""

    model_config = ConfigDict(frozen=True)

    method: str
    base: str | None
    models: tuple[str, ...]
    weights: tuple[float, ...]  # empty for slerp
    density: float
    lam: float
    slerp_t: float
    seed: int
    dtype: str
    out_dir: str
    tensors_merged: int  # float tensors combined by the method
    tensors_copied: int  # non-float tensors (e.g. integer buffers), copied from the first input
    output_files: tuple[str, ...]
    output_bytes: int  # bytes of the weight files written
    peak_tensor_bytes: int  # estimate: largest per-name working set (inputs, fp32 copies, result)
    elapsed_s: float


def _check_params(
    spec: MergeMethod,
    base: Path | None,
    models: Sequence[Path],
    weights: Sequence[float] | None,
    density: float,
    slerp_t: float,
    dtype: str,
) -> tuple[float, ...]:
    """Validate the options for `spec`; return the weights to use (one per model)."""
    if not models:
        raise ConfigError("give at least one model to merge")
    if spec.needs_base and base is None:
        raise ConfigError(f"method {spec.name!r} needs a base model")
    if spec.model_count is not None and len(models) != spec.model_count:
        raise ConfigError(
            f"method {spec.name!r} takes exactly {spec.model_count} models, got {len(models)}"
        )
    if dtype not in OUTPUT_DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; known: {', '.join(OUTPUT_DTYPES)}")
    if not 0.0 < density <= 1.0:
        raise ConfigError(f"density must be in (0, 1], got {density}")
    if not 0.0 <= slerp_t <= 1.0:
        raise ConfigError(f"slerp t must be in [0, 1], got {slerp_t}")
    if spec.name == "slerp":
        if weights:
            raise ConfigError("slerp takes t, not per-model weights")
        return ()
    chosen = tuple(float(w) for w in weights) if weights else (1.0,) * len(models)
    if len(chosen) != len(models):
        raise ConfigError(f"got {len(chosen)} weights for {len(models)} models; give one per model")
    if not all(math.isfinite(w) for w in chosen):
        raise ConfigError(f"weights must be finite, got {list(chosen)}")
    if spec.name == "linear" and sum(chosen) == 0:
        raise ConfigError("linear weights sum to zero; the average is undefined")
    if spec.name == "ties" and any(w <= 0 for w in chosen):
        raise ConfigError(f"ties weights must be positive, got {list(chosen)}")
    return chosen


def _prepare_out_dir(out_dir: Path, inputs: Sequence[Path], overwrite: bool) -> Path:
    out = Path(out_dir)
    if any(out.resolve() == Path(p).resolve() for p in inputs):
        raise ConfigError(f"output directory {out} is one of the inputs")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"output directory {out} is not empty; choose another or allow overwrite"
            )
        # Stale shards of an earlier merge would be mixed with the new ones.
        for stale in [*out.glob("*.safetensors"), out / INDEX_FILE]:
            stale.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _plan(ref: ModelFiles, out_code: str) -> list[OutputTensor]:
    return [
        OutputTensor(name, out_code if info.dtype in FLOAT_DTYPES else info.dtype, info.shape)
        for name, info in ref.tensors.items()
    ]


def _peak_bytes(inputs: Sequence[ModelFiles], plan: Sequence[OutputTensor]) -> int:
    def working_set(t: OutputTensor) -> int:
        infos = [m.tensors[t.name] for m in inputs]
        stored = sum(i.numel * ITEMSIZE[i.dtype] for i in infos)
        # fp32 copies of the inputs, plus an accumulator and the result
        return stored + (len(infos) + 2) * infos[0].numel * 4 + t.nbytes

    return max((working_set(t) for t in plan), default=0)


def _merge_one(
    name: str,
    inputs: Sequence[ModelFiles],
    has_base: bool,
    reader: TensorReader,
    spec: MergeMethod,
    params: MergeParams,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """Load `name` from every input, merge, return the output tensor (inputs freed on return)."""
    if inputs[0].tensors[name].dtype not in FLOAT_DTYPES:
        return reader.load(inputs[0].tensors[name])
    loaded = [reader.load(m.tensors[name]).to(torch.float32) for m in inputs]
    base, models = (loaded[0], loaded[1:]) if has_base else (None, loaded)
    return spec.fn(name, base, models, params).to(out_dtype)


def _tokenizer_source(tokenizer_from: Path | None, inputs: Sequence[ModelFiles]) -> Path | None:
    if tokenizer_from is not None:
        return Path(tokenizer_from)
    return next(
        (m.path for m in inputs if any((m.path / n).is_file() for n in TOKENIZER_FILES)), None
    )


def merge_models(
    *,
    method: str,
    base: Path | None,
    models: Sequence[Path],
    weights: Sequence[float] | None = None,
    out_dir: Path,
    density: float = 0.5,
    lam: float = 1.0,
    slerp_t: float = 0.5,
    seed: int = 0,
    dtype: str = "float32",
    tokenizer_from: Path | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
) -> MergeReport:
    """Merge `models` (against `base`) with a registered method and write the result.

    Methods: `linear` (sum w_i m_i / sum w_i; base optional and unused in the sum),
    `task_arithmetic` (base + lam * sum w_i (m_i - base)), `ties` (top-density trim, sign
    election, disjoint weighted mean, scaled by lam), `dare` (drop with probability
    1 - density, rescale by 1/density, then task arithmetic; seeded per tensor) and `slerp`
    (exactly two models, interpolation parameter `slerp_t`; base optional and unused).

    Args:
        method: registered method name (see `known_methods()`).
        base: the model the others were fine-tuned from; required by task_arithmetic, ties
            and dare. When given it is also checked and is the source of config.json.
        models: model directories (safetensors, single file or sharded).
        weights: one per model; default all 1. Not accepted by slerp. Must be positive for ties.
        out_dir: output directory; must be empty unless `overwrite`.
        density: fraction of task-vector entries kept by ties and dare, in (0, 1].
        lam: scale of the combined task vector (task_arithmetic, ties, dare).
        slerp_t: slerp position, 0 = first model, 1 = second.
        seed: dare drop-mask seed (each tensor gets a generator seeded by seed and name).
        dtype: output dtype of float tensors: float32, bfloat16 or float16.
        tokenizer_from: directory whose tokenizer files are copied (and checked); default
            the base, else the first model that has tokenizer files.
        max_shard_bytes: output shard size limit; above it the weights are sharded with an index.
        overwrite: replace the weights in a non-empty `out_dir`.

    Returns:
        The report, also written to `out_dir/merge_report.json`.

    Raises:
        UnknownIdError: unknown method.
        ConfigError: bad options (missing base, wrong number of weights or models, ranges).
        ModelRejected: an input is missing, pickle-only or unreadable (reason says which), or
            the inputs differ in architecture, tensors or tokenizer (`merge_mismatch`, with
            every difference in the message and in `facts["problems"]`).
    """
    started = time.perf_counter()
    spec = get_method(method)
    chosen = _check_params(spec, base, models, weights, density, slerp_t, dtype)
    params = MergeParams(weights=chosen, density=density, lam=lam, slerp_t=slerp_t, seed=seed)
    inputs = [open_model(Path(base), "base")] if base is not None else []
    inputs += [open_model(Path(m), f"model[{i}]") for i, m in enumerate(models)]
    tok_source = _tokenizer_source(tokenizer_from, inputs)
    tok_dirs = [(m.label, m.path) for m in inputs]
    if tokenizer_from is not None:
        tok_dirs.insert(0, (f"tokenizer_from '{Path(tokenizer_from).name}'", Path(tokenizer_from)))
    check_compatible(inputs, tok_dirs)
    out = _prepare_out_dir(out_dir, [m.path for m in inputs], overwrite)

    out_dtype = OUTPUT_DTYPES[dtype]
    plan = _plan(inputs[0], TORCH_DTYPE_CODES[out_dtype])
    writer = ShardedWriter(out, plan, max_shard_bytes)
    logger.info("merging %d tensors of %d inputs with %s", len(plan), len(inputs), spec.name)
    with ExitStack() as stack:
        reader = TensorReader(stack)
        for entry in writer.order:
            # Passed straight on, so no loaded tensor outlives its own iteration.
            writer.write(
                _merge_one(entry.name, inputs, base is not None, reader, spec, params, out_dtype)
            )
        files = writer.finish()
    copy_side_files(out, inputs[0].path, tok_source, dtype)

    copied = sum(1 for t in plan if inputs[0].tensors[t.name].dtype not in FLOAT_DTYPES)
    report = MergeReport(
        method=spec.name,
        base=str(base) if base is not None else None,
        models=tuple(str(m) for m in models),
        weights=chosen,
        density=density,
        lam=lam,
        slerp_t=slerp_t,
        seed=seed,
        dtype=dtype,
        out_dir=str(out),
        tensors_merged=len(plan) - copied,
        tensors_copied=copied,
        output_files=tuple(files),
        output_bytes=writer.bytes_written,
        peak_tensor_bytes=_peak_bytes(inputs, plan),
        elapsed_s=round(time.perf_counter() - started, 3),
    )
    (out / REPORT_FILE).write_text(report.model_dump_json(indent=2) + "\n")
    # The result itself is the caller's to show (the script prints it once, from the report).
    logger.debug("merged into %s (%d bytes) in %.1fs", out, report.output_bytes, report.elapsed_s)
    return report
