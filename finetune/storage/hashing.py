"""Content and secure hashes of a model snapshot (SPEC §3).

Files hashed: the allowed files at the top of the snapshot folder (`files.ALLOWED_FILE_PATTERNS`:
safetensors, configs, tokenizer files), i.e. exactly what a validator downloads; anything
else in the folder (caches, README, the miner's scratch files) is ignored. They are taken in
sorted order of their names (Python string order = Unicode code points) and read in 1 MiB
chunks, so multi-GiB shards hash in constant memory.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from finetune.storage.files import allowed_files_in, sha256_file


def content_hash(snapshot_dir: str | Path) -> str:
    """Hash of a snapshot's allowed files.

    For each file in order, base64(SHA-256(file bytes)) is fed into one outer SHA-256; the
    result is base64 of the outer digest (44 characters).

    Args:
        snapshot_dir: folder holding the downloaded (or about to be uploaded) model.

    Returns:
        The 44-character base64 content hash.

    Raises:
        NotADirectoryError: `snapshot_dir` is not a folder.
    """
    folder = Path(snapshot_dir)
    if not folder.is_dir():
        raise NotADirectoryError(f"not a model folder: {folder}")
    outer = hashlib.sha256()
    for path in allowed_files_in(folder):
        outer.update(base64.b64encode(sha256_file(path)))
    return base64.b64encode(outer.digest()).decode("ascii")


def secure_hash(content_hash: str, hotkey: str) -> str:
    """Bind a content hash to the hotkey that commits it: base64(SHA-256(utf8(hash + hotkey)))."""
    digest = hashlib.sha256((content_hash + hotkey).encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii")


__all__ = ["content_hash", "secure_hash"]
