"""Which files belong to a model, and the parsers for the names a store is handed.

One list of allowed file names serves the uploader, the downloader and the content hash, so a
miner hashes exactly the files a validator will download. Only top-level files are allowed,
with plain names (letters, digits, `.`, `_`, `-`): that rules out path tricks and keeps every
name free of glob characters, so it can be passed to the Hub client as an exact pattern.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from pathlib import Path, PurePosixPath

from finetune.errors import ModelRejected, StorageError
from finetune.submission import MAX_SUBMISSION_BYTES, SUBMISSION_FILE

# Weights (safetensors only), configs and tokenizer files. Never pickles (*.bin, *.pt) or code.
ALLOWED_FILE_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.*.json",  # versioned tokenizer files (`fast_tokenizer_files`) the reference reads
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",  # sentencepiece protobuf, not a pickle
    "vocab.json",
    "vocab.txt",
    "merges.txt",
)

# Ours (a safety limit in every protocol): the largest a small file may be, checked against the
# listing before any download and against the disk before any parse. Parsing JSON costs ~20x
# its size in Python objects: a 45 MiB config.json of nested `[]` took a validator to 2.5 GiB.
# Real files are far below: configs a few KiB, Gemma's 33 MiB tokenizer.json the largest seen.
_MIB = 1024 * 1024
MAX_FILE_BYTES: dict[str, int] = {
    "config.json": 1 * _MIB,
    "generation_config.json": 1 * _MIB,
    "special_tokens_map.json": 1 * _MIB,
    "chat_template.jinja": 1 * _MIB,
    "chat_template.json": 1 * _MIB,
    "tokenizer_config.json": 16 * _MIB,
    "added_tokens.json": 16 * _MIB,
    "*.safetensors.index.json": 16 * _MIB,
    "tokenizer.json": 64 * _MIB,
    "tokenizer.*.json": 64 * _MIB,
    "tokenizer.model": 64 * _MIB,
    "vocab.json": 64 * _MIB,
    "vocab.txt": 64 * _MIB,
    "merges.txt": 64 * _MIB,
}


def size_limit(path: str) -> int | None:
    """The most bytes file `path` may hold, or None when only the revision's total applies."""
    for pattern, limit in MAX_FILE_BYTES.items():
        if fnmatch.fnmatchcase(path, pattern):
            return limit
    return None


# Extensions that hold pickles (arbitrary code on load) or code itself.
UNSAFE_SUFFIXES: frozenset[str] = frozenset(
    {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".py", ".pyc", ".so"}
)

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_REVISION = re.compile(r"[0-9a-f]{40}")
_CHUNK = 1 << 20  # 1 MiB reads: constant memory for multi-GiB shards


def is_allowed_file(path: str) -> bool:
    """True for a top-level file with a plain name that matches an allowed pattern."""
    if not _PLAIN_NAME.fullmatch(path) or ".." in path:
        return False
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in ALLOWED_FILE_PATTERNS)


def is_unsafe_file(path: str) -> bool:
    """True when a file's extension marks a pickle or code."""
    return PurePosixPath(path).suffix.lower() in UNSAFE_SUFFIXES


def is_safe_file_name(path: str) -> bool:
    """False for names that could escape a folder: absolute, `..`, backslashes, control chars."""
    if not path or path.startswith("/") or "\\" in path:
        return False
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def validate_repo_id(repo_id: str) -> tuple[str, str]:
    """Split `namespace/name`, refusing anything that could be a path trick.

    Returns:
        (namespace, name).

    Raises:
        StorageError: reason `bad_repo_id`.
    """
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if len(parts) != 2 or ".." in repo_id or not all(_REPO_PART.fullmatch(p) for p in parts):
        raise StorageError(
            f"invalid repo id {repo_id!r}: expected 'namespace/name' of letters, digits, '.', '_', '-'",
            reason="bad_repo_id",
            repo_id=repo_id,
        )
    return parts[0], parts[1]


def validate_revision(revision: str) -> str:
    """Check a pinned revision (40 lower-case hex characters).

    Raises:
        StorageError: reason `bad_revision`.
    """
    if not isinstance(revision, str) or not _REVISION.fullmatch(revision):
        raise StorageError(
            f"invalid revision {revision!r}: expected a 40-hex commit sha", reason="bad_revision"
        )
    return revision


def sha256_file(path: str | Path) -> bytes:
    """SHA-256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.digest()


def read_small_json(path: str | Path) -> object:
    """Parse a small JSON file (config, tokenizer config, index), refusing one over its size
    limit before reading it.

    Raises:
        ModelRejected: reason `oversized_file`.
        ValueError: the bytes are not utf-8 JSON (huge integers and deep nesting included).
    """
    file = Path(path)
    limit = size_limit(file.name)
    size = file.stat().st_size
    if limit is not None and size > limit:
        raise ModelRejected(
            f"{file.name} is {size:,} bytes, over the {limit:,} bytes such a file may have",
            reason="oversized_file",
            file=file.name,
        )
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None


# The seeds' competitions' submission manifest (`finetune.submission`): uploaded with the
# model and read by itself through `ModelStore.read_file`, but never downloaded with the model
# nor hashed, so no protocol's file set or content hash changes because of it.
MANIFEST_FILE = SUBMISSION_FILE
MAX_MANIFEST_BYTES = MAX_SUBMISSION_BYTES


def upload_files_in(folder: str | Path) -> list[Path]:
    """What an upload of `folder` pushes: its allowed files, plus `MANIFEST_FILE` if present.

    Raises:
        StorageError: the manifest is over `MAX_MANIFEST_BYTES` (reason `oversized_file`).
    """
    files = allowed_files_in(folder)
    manifest = Path(folder) / MANIFEST_FILE
    if manifest.is_file():
        if manifest.stat().st_size > MAX_MANIFEST_BYTES:
            raise StorageError(f"{manifest} is over {MAX_MANIFEST_BYTES} bytes", reason="oversized_file")
        files = sorted([*files, manifest], key=lambda p: p.name)
    return files


def allowed_files_in(folder: str | Path) -> list[Path]:
    """The allowed files directly inside `folder`, sorted by name (code-point order)."""
    root = Path(folder)
    return sorted(
        (p for p in root.iterdir() if p.is_file() and is_allowed_file(p.name)), key=lambda p: p.name
    )


__all__ = [
    "ALLOWED_FILE_PATTERNS",
    "MANIFEST_FILE",
    "MAX_MANIFEST_BYTES",
    "upload_files_in",
    "MAX_FILE_BYTES",
    "UNSAFE_SUFFIXES",
    "allowed_files_in",
    "is_allowed_file",
    "is_safe_file_name",
    "is_unsafe_file",
    "read_small_json",
    "sha256_file",
    "size_limit",
    "validate_repo_id",
    "validate_revision",
]
