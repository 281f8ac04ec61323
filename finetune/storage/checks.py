"""Model checks, each with a named reason (`ModelRejected.reason`).

Before download (`check_revision`): file names, sizes (the revision's and each small file's),
file types, a first bound on the parameter count and the tensor count from the headers.
After download (`check_model_dir`): config, architecture, remote code, safetensors integrity,
the parameter count the config implies against the weights stored, weight norms; and
`verify_hashes` for the anti-copy binding. The validator runs the post-download checks in a
child process with a memory limit and a deadline (`finetune.validator.fetcher`).
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune.competition import ModelConstraints
from finetune.errors import ModelRejected
from finetune.storage.files import is_safe_file_name, is_unsafe_file, size_limit
from finetune.storage.hashing import content_hash, secure_hash
from finetune.storage.model_shape import check_stored_elements, implied_shape
from finetune.storage.norms import check_weight_norms
from finetune.storage.records import RevisionInfo, SafetensorsSummary
from finetune.storage.safetensors_header import read_layout

# Ours (a safety limit): tensors over all shards of one model. An 8B dense model has ~300.
MAX_TENSORS_PER_MODEL = 20_000


def _check_param_count(count: int, constraints: ModelConstraints) -> None:
    if not constraints.min_params <= count <= constraints.max_params:
        raise ModelRejected(
            f"parameter count {count:,} outside [{constraints.min_params:,}, "
            f"{constraints.max_params:,}]",
            reason="bad_param_count",
            parameter_count=count,
        )


def _check_tensor_count(count: int) -> None:
    if count > MAX_TENSORS_PER_MODEL:
        raise ModelRejected(
            f"{count:,} tensors, over the {MAX_TENSORS_PER_MODEL:,} one model may hold",
            reason="too_many_tensors",
            tensors=count,
        )


def check_revision(
    info: RevisionInfo, meta: SafetensorsSummary | None, constraints: ModelConstraints
) -> None:
    """Checks that need no download: names, sizes, file types, header counts.

    The headers cannot give the parameter count (a tied output head may be stored twice, a
    tensor may belong to no layer; `check_model_dir` counts what the config implies), so
    here only a count no model within the limit can reach rejects: more than twice the
    maximum, since a tied copy at most doubles it.

    Args:
        info: the revision's file listing.
        meta: element and tensor counts from the safetensors headers, if read.
        constraints: the competition's model constraints.

    Raises:
        ModelRejected: `bad_file_name`, `too_large`, `oversized_file`, `unsafe_files`,
            `too_many_tensors` or `bad_param_count`.
    """
    bad = [f.path for f in info.files if not is_safe_file_name(f.path)]
    if bad:
        raise ModelRejected(f"unsafe file names in {info.repo_id}: {bad!r}", reason="bad_file_name")
    if info.total_bytes > constraints.max_bytes:
        raise ModelRejected(
            f"{info.repo_id}@{info.revision} holds {info.total_bytes:,} bytes, over the "
            f"{constraints.max_bytes:,} byte limit",
            reason="too_large",
            total_bytes=info.total_bytes,
        )
    for remote in info.download_files:
        _check_file_size(remote.path, remote.size)
    unsafe = [f.path for f in info.files if is_unsafe_file(f.path)]
    if unsafe:
        raise ModelRejected(
            f"pickle or code files in {info.repo_id}: {unsafe}", reason="unsafe_files"
        )
    if not any(f.path.endswith(".safetensors") for f in info.download_files):
        raise ModelRejected(f"no safetensors weights in {info.repo_id}", reason="unsafe_files")
    if meta is not None:
        _check_tensor_count(meta.tensor_count)
        if meta.parameter_count > 2 * constraints.max_params:
            _check_param_count(meta.parameter_count, constraints)


def _check_file_size(name: str, size: int) -> None:
    limit = size_limit(name)
    if limit is not None and size > limit:
        raise ModelRejected(
            f"{name} is {size:,} bytes, over the {limit:,} bytes such a file may have",
            reason="oversized_file",
            file=name,
        )


def _load_json(path: Path) -> dict:
    try:
        _check_file_size(path.name, path.stat().st_size)  # what was served, not what was listed
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON, huge ints
        raise ModelRejected(
            f"{path.name} does not parse: {str(exc)[:200]}", reason="bad_config"
        ) from None
    if not isinstance(data, dict):
        raise ModelRejected(f"{path.name} is not a JSON object", reason="bad_config")
    return data


def _check_files(model_dir: Path) -> None:
    unsafe = sorted(p.name for p in model_dir.rglob("*") if p.is_file() and is_unsafe_file(p.name))
    if unsafe:
        reason = (
            "remote_code"
            if any(n.endswith((".py", ".pyc", ".so")) for n in unsafe)
            else "unsafe_files"
        )
        raise ModelRejected(f"pickle or code files present: {unsafe}", reason=reason)
    for path in model_dir.iterdir():
        if path.is_file():
            _check_file_size(path.name, path.stat().st_size)


def _check_config(model_dir: Path, constraints: ModelConstraints) -> None:
    if not (model_dir / "config.json").is_file():
        raise ModelRejected("config.json is missing", reason="bad_config")
    config = _load_json(model_dir / "config.json")
    archs = config.get("architectures")
    if (
        not isinstance(archs, list)
        or len(archs) != 1
        or archs[0] not in constraints.allowed_architectures
    ):
        raise ModelRejected(
            f"architectures {archs!r} not one of {list(constraints.allowed_architectures)}",
            reason="bad_architecture",
        )
    _check_model_type(config.get("model_type"), archs[0])
    _check_family(config.get("model_type"), constraints)
    if "auto_map" in config:
        raise ModelRejected("config.json asks for remote code (auto_map)", reason="remote_code")
    tokenizer_config = model_dir / "tokenizer_config.json"
    if tokenizer_config.is_file() and "auto_map" in _load_json(tokenizer_config):
        raise ModelRejected("tokenizer_config.json asks for remote code (auto_map)", reason="remote_code")


def _check_model_type(model_type: object, architecture: str) -> None:
    # transformers picks the class from `model_type`, not from `architectures`: they must agree,
    # or an allowed name could load a class that is not allowed.
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    expected = (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type) if isinstance(model_type, str) else None
    )
    if expected != architecture:
        raise ModelRejected(
            f"model_type {model_type!r} loads {expected!r}, not the declared {architecture}",
            reason="bad_architecture",
        )


def _check_family(model_type: object, constraints: ModelConstraints) -> None:
    # "Start from an approved open base model family" (SPEC §9), read from config.model_type:
    # a family names a prefix of model types ("qwen" covers qwen2, "gpt_neo" covers gpt_neox).
    families = constraints.approved_families
    if not families:
        return
    kind = str(model_type).lower().replace("-", "_")
    if not any(kind.startswith(family) for family in families):
        raise ModelRejected(
            f"model_type {model_type!r} is not of an approved base family ({', '.join(families)})",
            reason="unapproved_family",
        )


def _weight_violations(
    model_dir: Path, constraints: ModelConstraints, reject_unused: bool
) -> list[ModelRejected]:
    """The parameter count the config implies, then the stored weights against it.

    Raises:
        ModelRejected: unreadable weights (no shard, corrupt or oversized headers, a config
            no model can be built from): nothing else can be measured then.
    """
    shards = sorted(p for p in model_dir.iterdir() if p.name.endswith(".safetensors"))
    if not shards:
        raise ModelRejected("no safetensors weights", reason="unsafe_files")
    tensors = stored = 0
    for shard in shards:
        entries = read_layout(shard).entries
        tensors += len(entries)
        _check_tensor_count(tensors)
        stored += sum(t.parameter_count for t in entries)
    shape = implied_shape(model_dir)
    found = []
    for check in (
        lambda: _check_param_count(shape.parameters, constraints),
        lambda: check_stored_elements(stored, shape, reject_unused=reject_unused),
    ):
        try:
            check()
        except ModelRejected as exc:
            found.append(exc)
    return found


def _violations(
    model_dir: Path, constraints: ModelConstraints, reject_unused: bool
) -> list[ModelRejected]:
    found = []
    try:
        _check_files(model_dir)
    except ModelRejected as exc:
        found.append(exc)
    try:
        _check_config(model_dir, constraints)
    except ModelRejected as exc:
        found.append(exc)
        if exc.reason in ("bad_config", "remote_code"):
            return found  # no model can be built from this config to check the weights against
    try:
        found += _weight_violations(model_dir, constraints, reject_unused)
    except ModelRejected as exc:
        return [*found, exc]  # unreadable weights: the norms cannot be measured
    if constraints.norm_limits is not None:
        try:
            check_weight_norms(model_dir, constraints.norm_limits)
        except ModelRejected as exc:
            found.append(exc)
    return found


def check_model_dir(
    model_dir: str | Path, constraints: ModelConstraints, *, reject_unused: bool = True
) -> None:
    """Checks on the downloaded files; raises the first violation.

    Order: no pickle/code files, no small file over its size limit, config parses, one
    allowed architecture that matches `model_type`, no `auto_map`, safetensors headers
    consistent with the file sizes and not too many tensors, the parameter count the config
    implies in range, the stored weights neither missing nor (with `reject_unused`) unused,
    weight norms (when the competition sets limits).

    Raises:
        ModelRejected: `unsafe_files`, `remote_code`, `oversized_file`, `bad_config`,
            `bad_architecture`, `corrupt_safetensors`, `too_many_tensors`,
            `bad_param_count`, `missing_weights`, `unused_weights` or `weight_norms`.
    """
    found = _violations(Path(model_dir), constraints, reject_unused)
    if found:
        raise found[0]


def model_dir_violations(
    model_dir: str | Path, constraints: ModelConstraints, *, reject_unused: bool = True
) -> list[str]:
    """Every violation of `check_model_dir` as `"reason: message"` (for the local scoring tool)."""
    return [f"{exc.reason}: {exc}" for exc in _violations(Path(model_dir), constraints, reject_unused)]


def verify_hashes(model_dir: str | Path, hotkey: str, expected_secure_hash: str) -> str:
    """Recompute the content hash and check the committed secure hash binds it to `hotkey`.

    Returns:
        The content hash (for duplicate detection across hotkeys).

    Raises:
        ModelRejected: reason `hash_mismatch`.
    """
    digest = content_hash(model_dir)
    if secure_hash(digest, hotkey) != expected_secure_hash:
        raise ModelRejected(
            f"secure hash of the downloaded files for hotkey {hotkey} does not match the commitment",
            reason="hash_mismatch",
            content_hash=digest,
        )
    return digest


__all__ = [
    "MAX_TENSORS_PER_MODEL",
    "check_model_dir",
    "check_revision",
    "model_dir_violations",
    "verify_hashes",
]
