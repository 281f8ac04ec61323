"""Model checks, each with a named reason (`ModelRejected.reason`), by the protocol's rules.

Before download (`check_revision`): file names, sizes (the revision's and each small file's),
file types, a first bound on the parameter count and the tensor count from the headers.
After download (`check_model_dir`): config, architecture, remote code, safetensors integrity,
the parameter count the config implies against the weights stored, weight norms; and
`verify_hashes` for the anti-copy binding. The validator runs the post-download checks in a
child process with a memory limit and a deadline (`finetune.validator.fetcher`).

Every function takes the protocol's `CheckRules` (default: `NEXT.checks`, ours). Under the
reference's rules (`REFERENCE_31.checks`) the order is the reference's: the model must load
(`check_loadable`: config, architectures, a model transformers builds, its weight files),
then the parameter count, the class `model_type` selects, missing weights, the norm rule.
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune.competition import ModelConstraints
from finetune.errors import ModelRejected
from finetune.protocol import NEXT, CheckRules, HashRules
from finetune.storage.files import is_safe_file_name, is_unsafe_file, size_limit
from finetune.storage.hashing import content_hash, reference_weight_files, secure_hash
from finetune.storage.model_shape import ImpliedShape, check_stored_elements, implied_shape
from finetune.storage.norms import check_reference_norms, check_weight_norms
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
    info: RevisionInfo,
    meta: SafetensorsSummary | None,
    constraints: ModelConstraints,
    *,
    checks: CheckRules = NEXT.checks,
) -> None:
    """Checks that need no download: names, sizes, file types, header counts.

    The headers cannot give the parameter count (a tied output head may be stored twice, a
    tensor may belong to no layer; `check_model_dir` counts what the config implies), so
    here only a count no model within the limit can reach rejects: more than twice the
    maximum, since a tied copy at most doubles it (only where unused tensors reject: where
    they do not, the headers bound nothing).

    Args:
        info: the revision's file listing.
        meta: element and tensor counts from the safetensors headers, if read.
        constraints: the competition's model constraints.
        checks: the protocol's rules (`stray_files`: whether pickles or code beside the
            weights reject; `reject_unused_weights`: whether the header bound applies).

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
    if unsafe and checks.stray_files == "reject":
        raise ModelRejected(
            f"pickle or code files in {info.repo_id}: {unsafe}", reason="unsafe_files"
        )
    if not any(f.path.endswith(".safetensors") for f in info.download_files):
        raise ModelRejected(f"no safetensors weights in {info.repo_id}", reason="unsafe_files")
    if meta is not None:
        _check_tensor_count(meta.tensor_count)
        if checks.reject_unused_weights and meta.parameter_count > 2 * constraints.max_params:
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


def _check_files(model_dir: Path, checks: CheckRules) -> None:
    if checks.stray_files == "reject":
        unsafe = sorted(
            p.name for p in model_dir.rglob("*") if p.is_file() and is_unsafe_file(p.name)
        )
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


def _read_config(model_dir: Path) -> dict:
    if not (model_dir / "config.json").is_file():
        raise ModelRejected("config.json is missing", reason="bad_config")
    return _load_json(model_dir / "config.json")


def _check_declared_architecture(config: dict, constraints: ModelConstraints) -> None:
    # Ours: one allowed name, and the class `model_type` selects must be that one.
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


def _check_reference_architectures(config: dict) -> None:
    # The reference only reads `architectures[0]`: it must exist (else "could not be loaded"),
    # and "e2tts" routes to its speech loader, which never builds a causal LM of the list.
    archs = config.get("architectures")
    first = archs[0] if isinstance(archs, (list, str)) and archs else None
    if not isinstance(first, str):
        raise ModelRejected(
            f"config.json names no architecture ({archs!r}): the reference cannot load it",
            reason="bad_config",
        )
    if first.lower() == "e2tts":
        raise ModelRejected("an e2tts (speech) model is no causal LM", reason="bad_architecture")


def _check_remote_code(model_dir: Path, config: dict) -> None:
    if "auto_map" in config:
        raise ModelRejected("config.json asks for remote code (auto_map)", reason="remote_code")
    tokenizer_config = model_dir / "tokenizer_config.json"
    if tokenizer_config.is_file() and "auto_map" in _load_json(tokenizer_config):
        raise ModelRejected("tokenizer_config.json asks for remote code (auto_map)", reason="remote_code")


def _check_config(model_dir: Path, constraints: ModelConstraints, checks: CheckRules) -> None:
    config = _read_config(model_dir)
    if checks.architecture == "declared":
        _check_declared_architecture(config, constraints)
    else:
        _check_reference_architectures(config)
    _check_family(config.get("model_type"), constraints)
    if checks.remote_code_maps == "reject":
        _check_remote_code(model_dir, config)


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


def _check_built_class(shape: ImpliedShape, constraints: ModelConstraints) -> None:
    # The reference: `type(model) in allowed_architectures`, the model built from model_type.
    if shape.model_class not in constraints.allowed_architectures:
        raise ModelRejected(
            f"config.json's model_type builds {shape.model_class}, not one of "
            f"{list(constraints.allowed_architectures)}",
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


def weight_files(model_dir: str | Path, *, checks: CheckRules = NEXT.checks) -> list[str]:
    """The safetensors files whose tensors count as the model's.

    With `stray_files == "ignore"` (the reference), those the reference loads
    (`reference_weight_files`: model.safetensors, else the index's shards); with ``reject``
    (ours), every safetensors file of the folder, so a stray shard's tensors count as unused.

    Raises:
        ModelRejected: `unsafe_files` (none), or the reasons of `reference_weight_files`.
    """
    root = Path(model_dir)
    if checks.stray_files == "ignore":
        return [name for name in reference_weight_files(root) if name.endswith(".safetensors")]
    shards = sorted(p.name for p in root.iterdir() if p.name.endswith(".safetensors"))
    if not shards:
        raise ModelRejected("no safetensors weights", reason="unsafe_files")
    return shards


def _stored_elements(model_dir: Path, files: list[str]) -> int:
    tensors = stored = 0
    for name in files:
        entries = read_layout(model_dir / name).entries
        tensors += len(entries)
        _check_tensor_count(tensors)
        stored += sum(t.parameter_count for t in entries)
    return stored


def _weight_violations(
    model_dir: Path, constraints: ModelConstraints, checks: CheckRules
) -> list[ModelRejected]:
    """The parameter count the config implies, the class it builds (reference rules), then
    the stored weights against the count, then the norms.

    Raises:
        ModelRejected: unreadable weights (no shard, corrupt or oversized headers, a config
            no model can be built from): nothing else can be measured then.
    """
    files = weight_files(model_dir, checks=checks)
    stored = _stored_elements(model_dir, files)
    shape = implied_shape(model_dir)
    steps = [lambda: _check_param_count(shape.parameters, constraints)]
    if checks.architecture == "model_type":
        steps.append(lambda: _check_built_class(shape, constraints))
    steps.append(
        lambda: check_stored_elements(stored, shape, reject_unused=checks.reject_unused_weights)
    )
    limits = constraints.norm_limits
    if limits is not None and checks.norms == "reference":
        steps.append(lambda: check_reference_norms(model_dir, limits, shape.norm_walk, files))
    elif limits is not None:
        steps.append(lambda: check_weight_norms(model_dir, limits))
    found = []
    for step in steps:
        try:
            step()
        except ModelRejected as exc:
            found.append(exc)
    return found


def _violations(model_dir: Path, constraints: ModelConstraints, checks: CheckRules) -> list[ModelRejected]:
    found = []
    try:
        _check_files(model_dir, checks)
    except ModelRejected as exc:
        found.append(exc)
    try:
        _check_config(model_dir, constraints, checks)
    except ModelRejected as exc:
        found.append(exc)
        if exc.reason in ("bad_config", "remote_code"):
            return found  # no model can be built from this config to check the weights against
    try:
        found += _weight_violations(model_dir, constraints, checks)
    except ModelRejected as exc:
        return [*found, exc]  # unreadable weights: the norms cannot be measured
    return found


def _rules(checks: CheckRules, reject_unused: bool | None) -> CheckRules:
    if reject_unused is None:
        return checks
    return checks.model_copy(update={"reject_unused_weights": reject_unused})


def check_loadable(model_dir: str | Path, *, checks: CheckRules = NEXT.checks) -> None:
    """What the model must pass to load at all: config.json, its architecture fields (as the
    rules read them), a model transformers can build from it, readable weight files.

    The reference loads the model before it hashes it, so under its rules a model that cannot
    load is rejected for that, whatever its hash (`finetune.validator.fetcher`).

    Raises:
        ModelRejected: `bad_config`, `oversized_file`, `unsafe_files`, `missing_weights`,
            `unsupported_file`, `corrupt_safetensors`, `too_many_tensors`.
    """
    root = Path(model_dir)
    config = _read_config(root)
    if checks.architecture == "model_type":
        _check_reference_architectures(config)
    implied_shape(root)
    _stored_elements(root, weight_files(root, checks=checks))


def check_model_dir(
    model_dir: str | Path,
    constraints: ModelConstraints,
    *,
    reject_unused: bool | None = None,
    checks: CheckRules = NEXT.checks,
) -> None:
    """Checks on the downloaded files; raises the first violation.

    Order (ours): no pickle/code files, no small file over its size limit, config parses,
    one allowed architecture that matches `model_type`, no `auto_map`, safetensors headers
    consistent with the file sizes and not too many tensors, the parameter count the config
    implies in range, the stored weights neither missing nor (with `reject_unused`) unused,
    weight norms (when the competition sets limits). Under the reference's rules: config
    parses and names an architecture, the weight files the reference loads, the parameter
    count, the class `model_type` builds in the competition's list, no missing weights, the
    reference's norm rule.

    Args:
        model_dir: the downloaded model.
        constraints: the competition's model constraints.
        reject_unused: overrides `checks.reject_unused_weights` when given.
        checks: the protocol's rules.

    Raises:
        ModelRejected: `unsafe_files`, `remote_code`, `oversized_file`, `bad_config`,
            `bad_architecture`, `corrupt_safetensors`, `too_many_tensors`,
            `bad_param_count`, `missing_weights`, `unused_weights`, `weight_norms`,
            `norm_rule_unsupported` or `unsupported_file`.
    """
    found = _violations(Path(model_dir), constraints, _rules(checks, reject_unused))
    if found:
        raise found[0]


def model_dir_violations(
    model_dir: str | Path,
    constraints: ModelConstraints,
    *,
    reject_unused: bool | None = None,
    checks: CheckRules = NEXT.checks,
) -> list[str]:
    """Every violation of `check_model_dir` as `"reason: message"` (for the local scoring tool)."""
    rules = _rules(checks, reject_unused)
    return [f"{exc.reason}: {exc}" for exc in _violations(Path(model_dir), constraints, rules)]


def verify_hashes(
    model_dir: str | Path,
    hotkey: str,
    expected_secure_hash: str,
    *,
    hashing: HashRules = NEXT.hashing,
) -> str:
    """Recompute the content hash over the protocol's file set and check the committed
    secure hash binds it to `hotkey`.

    Returns:
        The content hash (for duplicate detection across hotkeys).

    Raises:
        ModelRejected: reason `hash_mismatch`; under the reference file set also the reasons
            of `hashing.reference_files` (`duplicate_files`, `unsupported_file`, ...).
    """
    digest = content_hash(model_dir, file_set=hashing.file_set)
    if secure_hash(digest, hotkey) != expected_secure_hash:
        raise ModelRejected(
            f"secure hash of the downloaded files for hotkey {hotkey} does not match the commitment",
            reason="hash_mismatch",
            content_hash=digest,
        )
    return digest


__all__ = [
    "MAX_TENSORS_PER_MODEL",
    "check_loadable",
    "check_model_dir",
    "check_revision",
    "model_dir_violations",
    "verify_hashes",
    "weight_files",
]
