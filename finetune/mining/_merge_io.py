"""File side of merging: read model layouts, check they can be merged, stream tensors in and out.

Only safetensors are read (never pickles). Tensor metadata comes from the safetensors headers,
so the checks load no weights; tensors are then loaded one name at a time.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import safetensors
import torch

from finetune.errors import ModelRejected
from finetune.storage.safetensors_header import read_header as read_safetensors_header

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
# config.json fields that fix the layout of the weights; other fields (token ids, rope
# scaling, dtype) may differ between fine-tunes of one base.
STRUCTURE_KEYS = (
    "architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings",
    "n_embd", "n_layer", "n_head", "n_inner", "d_model", "num_layers", "ffn_dim",
)  # fmt: skip
ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
FLOAT_DTYPES = {"F8_E4M3", "F8_E5M2", "F16", "BF16", "F32", "F64"}
_MAX_LISTED = 8  # names quoted per problem before "+N more"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors dtype code, e.g. "BF16"
    shape: tuple[int, ...]
    file: Path

    @property
    def numel(self) -> int:
        return _numel(self.shape)


@dataclass(frozen=True)
class ModelFiles:
    """One input model directory, parsed: its config and where each tensor lives."""

    path: Path
    label: str  # "base 'dir'" or "model[1] 'dir'", used in messages
    config: dict
    tensors: dict[str, TensorInfo]


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _reject(message: str, reason: str, path: Path) -> ModelRejected:
    return ModelRejected(message, reason=reason, path=str(path))


def read_header(file: Path) -> dict[str, TensorInfo]:
    """Tensor names, dtypes and shapes of one safetensors file, without loading data.

    The header is parsed and checked against the file by the validator's own parser, so a
    model that merges is one whose headers a validator accepts.
    """
    try:
        entries = read_safetensors_header(file)
    except ModelRejected as exc:
        raise _reject(f"{file}: {exc}", "bad_weights", file) from None
    unsupported = sorted({e.dtype for e in entries if e.dtype not in ITEMSIZE})
    if unsupported:
        raise _reject(f"{file}: tensor dtypes {unsupported} cannot be merged", "bad_weights", file)
    return {e.name: TensorInfo(e.name, e.dtype, e.shape, file) for e in entries}


def _weight_files(path: Path) -> list[Path]:
    index = path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            names = sorted(set(weight_map.values()))
        except (UnicodeDecodeError, ValueError, AttributeError, TypeError) as e:
            raise _reject(f"{index} is not a valid index: {e}", "bad_weights", path) from e
        # Shards are plain file names inside the model directory, never paths out of it.
        bad = [n for n in names if not isinstance(n, str) or Path(n).name != n or n in {".", ".."}]
        if bad:
            raise _reject(f"{index} names shards outside {path}: {bad[:3]}", "bad_weights", path)
        files = [path / name for name in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise _reject(
                f"{index} names missing shards: {', '.join(missing)}", "bad_weights", path
            )
        return files
    if (path / SINGLE_FILE).is_file():
        return [path / SINGLE_FILE]
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise _reject(
            f"{path} holds only pickle weights ({', '.join(pickles)}); pickles are never loaded, "
            "convert the model to safetensors first",
            "unsafe_format",
            path,
        )
    raise _reject(f"{path} has no {SINGLE_FILE} or {INDEX_FILE}", "no_weights", path)


def open_model(path: Path, label: str) -> ModelFiles:
    """Parse a model directory (single-file or sharded safetensors).

    Raises:
        ModelRejected: not a directory, no config.json, pickle-only or unreadable weights.
    """
    path = Path(path)
    if not path.is_dir():
        raise _reject(f"{label}: {path} is not a directory", "not_found", path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise _reject(f"{label}: {path} has no config.json", "bad_config", path)
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _reject(f"{label}: {config_file} is not valid JSON: {e}", "bad_config", path) from e
    tensors: dict[str, TensorInfo] = {}
    for file in _weight_files(path):
        tensors.update(read_header(file))
    return ModelFiles(path=path, label=f"{label} '{path.name}'", config=config, tensors=tensors)


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" (+{len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def config_differences(ref: ModelFiles, other: ModelFiles) -> list[str]:
    """One line per structural config field that differs."""
    return [
        f"config '{key}': {other.label} has {other.config.get(key)!r}, {ref.label} has {ref.config.get(key)!r}"
        for key in STRUCTURE_KEYS
        if ref.config.get(key) != other.config.get(key)
    ]


def tensor_differences(ref: ModelFiles, other: ModelFiles) -> list[str]:
    """Missing, extra and reshaped tensors of `other` relative to `ref`."""
    problems = []
    missing = sorted(set(ref.tensors) - set(other.tensors))
    extra = sorted(set(other.tensors) - set(ref.tensors))
    if missing:
        problems.append(
            f"{other.label} lacks {len(missing)} tensors of {ref.label}: {_listed(missing)}"
        )
    if extra:
        problems.append(
            f"{other.label} has {len(extra)} tensors not in {ref.label}: {_listed(extra)}"
        )
    reshaped = [
        f"{name} {list(other.tensors[name].shape)} vs {list(info.shape)}"
        for name, info in sorted(ref.tensors.items())
        if name in other.tensors and other.tensors[name].shape != info.shape
    ]
    if reshaped:
        problems.append(f"tensor shapes differ, {other.label} vs {ref.label}: {_listed(reshaped)}")
    return problems


def tokenizer_fingerprint(path: Path) -> dict | None:
    """What decides token ids: vocab, merges and added tokens (None if no tokenizer files).

    The chat template and other tokenizer_config.json fields may differ between fine-tunes.
    """
    tokenizer_json = path / "tokenizer.json"
    if tokenizer_json.is_file():
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        model = data.get("model") or {}
        added = [
            (t.get("id"), t.get("content"), t.get("special"))
            for t in data.get("added_tokens") or []
        ]
        return {"vocab": model.get("vocab"), "merges": model.get("merges"), "added_tokens": added}
    files = {
        n: (path / n).read_bytes()
        for n in ("vocab.json", "merges.txt", "tokenizer.model")
        if (path / n).is_file()
    }
    return files or None


def _tokenizer_problem(ref_label: str, ref: dict, label: str, other: dict) -> str | None:
    fields = sorted(k for k in set(ref) | set(other) if ref.get(k) != other.get(k))
    if not fields:
        return None
    detail = ""
    ref_vocab, other_vocab = ref.get("vocab"), other.get("vocab")
    if isinstance(ref_vocab, dict) and isinstance(other_vocab, dict):
        differing = sorted(
            t for t in set(ref_vocab) | set(other_vocab) if ref_vocab.get(t) != other_vocab.get(t)
        )
        if differing:
            detail = f" ({len(differing)} vocab entries differ, e.g. {_listed([repr(t) for t in differing][:3])})"
    return f"tokenizer differs, {label} vs {ref_label}: {', '.join(fields)}{detail}"


def tokenizer_differences(dirs: Sequence[tuple[str, Path]]) -> list[str]:
    """Compare every directory that has tokenizer files with the first that has them."""
    prints = [
        (label, fp) for label, path in dirs if (fp := tokenizer_fingerprint(path)) is not None
    ]
    if len(prints) < 2:
        return []
    (ref_label, ref), others = prints[0], prints[1:]
    return [p for label, fp in others if (p := _tokenizer_problem(ref_label, ref, label, fp))]


def check_compatible(
    inputs: Sequence[ModelFiles], tokenizer_dirs: Sequence[tuple[str, Path]]
) -> None:
    """Raise one error listing everything that stops `inputs` being merged.

    Raises:
        ModelRejected: reason `merge_mismatch`; `facts["problems"]` holds one line per problem.
    """
    ref = inputs[0]
    problems: list[str] = []
    for other in inputs[1:]:
        problems += config_differences(ref, other)
        problems += tensor_differences(ref, other)
    problems += tokenizer_differences(tokenizer_dirs)
    if problems:
        raise ModelRejected(
            "models cannot be merged: " + "; ".join(problems),
            reason="merge_mismatch",
            problems=tuple(problems),
        )


class TensorReader:
    """Loads single tensors, keeping one open safetensors handle per file."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._handles: dict[Path, object] = {}

    def load(self, info: TensorInfo) -> torch.Tensor:
        handle = self._handles.get(info.file)
        if handle is None:
            # Looked up at call time so tests can instrument it.
            opened = safetensors.safe_open(str(info.file), framework="pt", device="cpu")
            handle = self._handles[info.file] = self._stack.enter_context(opened)
        return handle.get_tensor(info.name)


def copy_side_files(
    out_dir: Path, config_from: Path, tokenizer_from: Path | None, dtype_name: str
) -> list[str]:
    """Copy config, generation config and tokenizer files; return the names written."""
    written = []
    config = json.loads((config_from / "config.json").read_text(encoding="utf-8"))
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = dtype_name
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    written.append("config.json")
    sources = [(config_from, "generation_config.json")]
    if tokenizer_from is not None:
        sources += [(tokenizer_from, name) for name in TOKENIZER_FILES]
    for source, name in sources:
        if (source / name).is_file():
            shutil.copyfile(source / name, out_dir / name)
            written.append(name)
    return written
