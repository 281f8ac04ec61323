"""Builders of bad model folders and bad hub revisions, for the validator's fault tests.

Each builder copies a healthy tiny model (`tests/conftest.py::tiny_model_dir`) to `dst` and
breaks one thing, the way a careless or hostile miner would. `plant_revision` writes a
revision straight into a `DirModelStore` folder, bypassing the upload filter, to stand for a
Hub repo holding files our uploader would never send (pickles, code, odd names).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

from finetune.storage import DirModelStore

WEIGHTS = "model.safetensors"


def copy_model(src: Path, dst: Path) -> Path:
    """A writable copy of `src` (the store marks its files read-only; copies must not be)."""
    shutil.copytree(src, dst)
    for path in dst.iterdir():
        path.chmod(0o644)
    return dst


def variant(src: Path, dst: Path, tag: str = " ") -> Path:
    """The same model with different bytes (so not a copy): whitespace added to a config."""
    copy_model(src, dst)
    path = dst / "generation_config.json"
    path.write_text(path.read_text() + tag)
    return dst


def _edit_config(model_dir: Path, **fields: object) -> None:
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text())
    config.update(fields)
    config_path.write_text(json.dumps(config, indent=1))


def with_architecture(src: Path, dst: Path, architecture: str, model_type: str | None = None) -> Path:
    """config.json declares another class (and optionally another `model_type`)."""
    copy_model(src, dst)
    fields: dict[str, object] = {"architectures": [architecture]}
    if model_type is not None:
        fields["model_type"] = model_type
    _edit_config(dst, **fields)
    return dst


def with_remote_code(src: Path, dst: Path) -> Path:
    """config.json asks transformers to import the repo's own code (`auto_map`)."""
    copy_model(src, dst)
    _edit_config(dst, auto_map={"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})
    return dst


def _tensors(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / WEIGHTS))


def _save_tensors(model_dir: Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(model_dir / WEIGHTS), metadata={"format": "pt"})


def with_nan(src: Path, dst: Path, tensor: str = "lm_head.weight") -> Path:
    """Every value of `tensor` is NaN.

    The default, the output head, is not a decoder projection, so the weight-norm check
    does not see it and the model reaches the evaluator, where every logit becomes NaN.
    """
    copy_model(src, dst)
    tensors = _tensors(dst)
    tensors[tensor] = tensors[tensor].clone().fill_(float("nan"))
    _save_tensors(dst, tensors)
    return dst


def with_scaled(src: Path, dst: Path, tensor: str, factor: float) -> Path:
    """`tensor` multiplied by `factor` (a huge norm, as an exploding fine-tune would give)."""
    copy_model(src, dst)
    tensors = _tensors(dst)
    tensors[tensor] = tensors[tensor] * factor
    _save_tensors(dst, tensors)
    return dst


def with_extra_tensor(src: Path, dst: Path, parameters: int) -> Path:
    """One more (valid) uint8 tensor of `parameters` elements in a second shard."""
    import torch
    from safetensors.torch import save_file

    copy_model(src, dst)
    save_file({"extra.weight": torch.zeros(parameters, dtype=torch.uint8)}, str(dst / "extra.safetensors"))
    return dst


def with_truncated_weights(src: Path, dst: Path) -> Path:
    """The weights file cut in half, as an interrupted upload leaves it."""
    copy_model(src, dst)
    data = (dst / WEIGHTS).read_bytes()
    (dst / WEIGHTS).write_bytes(data[: len(data) // 2])
    return dst


def with_lying_header(src: Path, dst: Path) -> Path:
    """The header claims the first tensor is one row bigger than the bytes it spans."""
    copy_model(src, dst)
    data = (dst / WEIGHTS).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"][0] += 1
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8 bytes
    (dst / WEIGHTS).write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length :])
    return dst


def plant_revision(store: DirModelStore, repo_id: str, files: dict[str, bytes]) -> str:
    """Write a revision holding exactly `files` (any names, any content) into `store`.

    Follows the layout documented in `finetune.storage.dir_store`; `upload` would drop files
    outside the allowed list, which is precisely what these tests need to keep.

    Returns:
        The revision sha.
    """
    namespace, name = repo_id.split("/")
    repo = store.root / namespace / name
    manifest = [{"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                for path, data in sorted(files.items())]
    text = json.dumps(manifest, sort_keys=True)
    sha = hashlib.sha1(text.encode()).hexdigest()
    folder = repo / "revisions" / sha
    folder.mkdir(parents=True)
    for path, data in files.items():
        target = folder / path
        if target.resolve().is_relative_to(folder.resolve()):  # never write outside the store
            target.write_bytes(data)
    (repo / "revisions" / f"{sha}.json").write_text(text)
    meta_path = repo / "repo.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"private": False, "revisions": []}
    meta["revisions"].append(sha)
    meta_path.write_text(json.dumps(meta))
    return sha


def model_files(model_dir: Path) -> dict[str, bytes]:
    """name -> bytes of every top-level file of a model folder."""
    return {p.name: p.read_bytes() for p in sorted(model_dir.iterdir()) if p.is_file()}


def pickle_only(model_dir: Path) -> dict[str, bytes]:
    """The model's files with the safetensors weights swapped for a `pytorch_model.bin`.

    The bytes are a stand-in: nothing may ever unpickle them, and the test checks they are
    never even downloaded.
    """
    files = {k: v for k, v in model_files(model_dir).items() if not k.endswith(".safetensors")}
    files["pytorch_model.bin"] = b"\x80\x04\x95 not really a pickle"
    return files


__all__ = [
    "copy_model",
    "model_files",
    "pickle_only",
    "plant_revision",
    "variant",
    "with_architecture",
    "with_extra_tensor",
    "with_lying_header",
    "with_nan",
    "with_remote_code",
    "with_scaled",
    "with_truncated_weights",
]
