"""Model checks, each with a named reason (`ModelRejected.reason`).

Before download (`check_revision`): file names, size, file types, parameter count from the
headers. After download (`check_model_dir`): config, architecture, remote code, safetensors
integrity, parameter count, weight norms; and `verify_hashes` for the anti-copy binding.
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune.competition import ModelConstraints
from finetune.errors import ModelRejected
from finetune.storage.files import is_safe_file_name, is_unsafe_file
from finetune.storage.hashing import content_hash, secure_hash
from finetune.storage.norms import check_weight_norms
from finetune.storage.records import RevisionInfo, SafetensorsSummary
from finetune.storage.safetensors_header import read_header


def _check_param_count(count: int, constraints: ModelConstraints) -> None:
    if not constraints.min_params <= count <= constraints.max_params:
        raise ModelRejected(
            f"parameter count {count:,} outside [{constraints.min_params:,}, "
            f"{constraints.max_params:,}]",
            reason="bad_param_count",
            parameter_count=count,
        )


def check_revision(
    info: RevisionInfo, meta: SafetensorsSummary | None, constraints: ModelConstraints
) -> None:
    """Checks that need no download: names, total size, file types, parameter count.

    Args:
        info: the revision's file listing.
        meta: parameter counts from the safetensors headers, if read (else not checked).
        constraints: the competition's model constraints.

    Raises:
        ModelRejected: `bad_file_name`, `too_large`, `unsafe_files` or `bad_param_count`.
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
    unsafe = [f.path for f in info.files if is_unsafe_file(f.path)]
    if unsafe:
        raise ModelRejected(
            f"pickle or code files in {info.repo_id}: {unsafe}", reason="unsafe_files"
        )
    if not any(f.path.endswith(".safetensors") for f in info.download_files):
        raise ModelRejected(f"no safetensors weights in {info.repo_id}", reason="unsafe_files")
    if meta is not None:
        _check_param_count(meta.parameter_count, constraints)


def _load_json(path: Path) -> dict:
    try:
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


def _check_config(model_dir: Path, constraints: ModelConstraints) -> None:
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
    for name in ("config.json", "tokenizer_config.json"):
        path = model_dir / name
        if path.is_file() and "auto_map" in _load_json(path):
            raise ModelRejected(f"{name} asks for remote code (auto_map)", reason="remote_code")


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


def _check_weights(model_dir: Path, constraints: ModelConstraints) -> None:
    shards = sorted(p for p in model_dir.iterdir() if p.name.endswith(".safetensors"))
    if not shards:
        raise ModelRejected("no safetensors weights", reason="unsafe_files")
    count = sum(t.parameter_count for shard in shards for t in read_header(shard))
    _check_param_count(count, constraints)


def _violations(model_dir: Path, constraints: ModelConstraints) -> list[ModelRejected]:
    found = []
    for check in (_check_files, lambda d: _check_config(d, constraints)):
        try:
            check(model_dir)
        except ModelRejected as exc:
            found.append(exc)
    try:
        _check_weights(model_dir, constraints)
    except ModelRejected as exc:
        found.append(exc)
        if exc.reason != "bad_param_count":
            return found  # unreadable weights: the norms cannot be measured
    if constraints.norm_limits is not None:
        try:
            check_weight_norms(model_dir, constraints.norm_limits)
        except ModelRejected as exc:
            found.append(exc)
    return found


def check_model_dir(model_dir: str | Path, constraints: ModelConstraints) -> None:
    """Checks on the downloaded files; raises the first violation.

    Order: no pickle/code files, config parses, one allowed architecture that matches
    `model_type`, no `auto_map`, safetensors headers consistent with the file sizes,
    parameter count in range, weight norms (when the competition sets limits).

    Raises:
        ModelRejected: `unsafe_files`, `remote_code`, `bad_config`, `bad_architecture`,
            `corrupt_safetensors`, `bad_param_count` or `weight_norms`.
    """
    found = _violations(Path(model_dir), constraints)
    if found:
        raise found[0]


def model_dir_violations(model_dir: str | Path, constraints: ModelConstraints) -> list[str]:
    """Every violation of `check_model_dir` as `"reason: message"` (for the local scoring tool)."""
    return [f"{exc.reason}: {exc}" for exc in _violations(Path(model_dir), constraints)]


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


__all__ = ["check_model_dir", "check_revision", "model_dir_violations", "verify_hashes"]
