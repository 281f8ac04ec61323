"""Bounded downloads: the bytes written to disk match the listing, and every download has a deadline.

Both stores copy each file through `copy_bounded`. The listing (`RevisionInfo`) is what the
validator checked before downloading (total size, file names, per-file limits), so the copy
holds the store to it:

* more bytes than listed: `ModelRejected`, reason `oversized_download`. The chunk that would
  go past the listed size is not written, so at most the listed size reaches the disk.
* fewer bytes than listed: `StorageError`, reason `incomplete_download` (a dropped connection).
* bytes that do not hash to the listed SHA-256 (LFS files on the Hub, every file of a folder
  store): `ModelRejected`, reason `hash_mismatch_download`.
* the `Deadline` passes: `StorageError`, reason `download_timeout`. It is checked at every
  chunk; the Hub store also caps each request's read timeout by what is left of it, so a
  connection that goes silent ends too.

The two rejections are not transient: the revision is pinned, so the same content is served
again and fails again. The two storage errors clear up with the network and are retried.

A file is written under a hidden temporary name beside its target and renamed only once
complete and verified; `fill_folder` removes what a failed download wrote, so a folder never
holds a partial file.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from finetune.errors import ModelRejected, StorageError
from finetune.storage.records import RemoteFile

CHUNK_BYTES = 1 << 20  # local reads: constant memory for multi-GiB shards, few system calls


def download_deadline_s(nbytes: int, *, base_s: float, min_rate_bytes_s: float) -> float:
    """Seconds a download of `nbytes` may take: a fixed allowance plus the bytes at the slowest
    acceptable rate.

    Raises:
        ValueError: a negative base or a rate that is not positive.
    """
    if base_s < 0 or min_rate_bytes_s <= 0:
        raise ValueError(f"need base_s >= 0 and min_rate_bytes_s > 0, got {base_s}, {min_rate_bytes_s}")
    return base_s + max(nbytes, 0) / min_rate_bytes_s


class Deadline:
    """A wall-clock budget shared by every file, request and retry of one download.

    Args:
        seconds: the budget, starting now.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        """Seconds left; zero or less once expired."""
        return self._end - self._clock()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    def timeout(self, what: str) -> StorageError:
        """The error to raise when `what` is cut off by this deadline."""
        return StorageError(
            f"{what}: not finished within the download deadline of {self.seconds:.1f} s",
            reason="download_timeout",
            deadline_s=self.seconds,
        )

    def check(self, what: str) -> None:
        """Raise the timeout error if the deadline has passed.

        Raises:
            StorageError: reason `download_timeout`.
        """
        if self.expired:
            raise self.timeout(what)


def oversized(
    what: str, remote: RemoteFile, received: int, written: int = 0, *, announced: bool = False
) -> ModelRejected:
    """The rejection for a file that arrives (or is announced) larger than listed."""
    sent = f"announced {received}" if announced else f"sent at least {received}"
    count = "announced_bytes" if announced else "received_bytes"
    return ModelRejected(
        f"{what}: the store {sent} bytes for a file listed as {remote.size}",
        reason="oversized_download",
        path=remote.path,
        listed_bytes=remote.size,
        written_bytes=written,
        **{count: received},
    )


def incomplete(
    what: str, remote: RemoteFile, received: int, *, announced: bool = False
) -> StorageError:
    """The error for a file that ends (or is announced) shorter than listed."""
    sent = "announced" if announced else "sent"
    count = "announced_bytes" if announced else "received_bytes"
    return StorageError(
        f"{what}: the store {sent} {received} bytes of a file listed as {remote.size}",
        reason="incomplete_download",
        path=remote.path,
        listed_bytes=remote.size,
        **{count: received},
    )


def file_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """A local file's bytes in chunks (it may be a pipe or a device: nothing assumes an end)."""
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            yield chunk


def copy_bounded(
    chunks: Iterable[bytes], target: Path, remote: RemoteFile, *, deadline: Deadline, what: str
) -> int:
    """Write `chunks` to `target` exactly as `remote` lists it, or write nothing.

    Args:
        chunks: the file's bytes as they arrive (from a socket or a local file).
        target: the final path; the bytes go to a hidden temporary file beside it first.
        remote: the listing entry: the exact size, and the SHA-256 when the store knows it.
        deadline: checked before every chunk is written.
        what: names the file in errors (e.g. ``alice/tiny@1a2b3c4d/model.safetensors``).

    Returns:
        The bytes written (the listed size).

    Raises:
        ModelRejected: reason `oversized_download` or `hash_mismatch_download`.
        StorageError: reason `incomplete_download` or `download_timeout`.
    """
    part = target.with_name(f".{target.name}.part")
    digest = hashlib.sha256() if remote.sha256 is not None else None
    written = 0
    try:
        with open(part, "xb") as handle:
            deadline.check(what)
            for chunk in chunks:
                if written + len(chunk) > remote.size:
                    raise oversized(what, remote, written + len(chunk), written)
                deadline.check(what)
                handle.write(chunk)
                written += len(chunk)
                if digest is not None:
                    digest.update(chunk)
        if written < remote.size:
            raise incomplete(what, remote, written)
        if digest is not None and digest.hexdigest() != str(remote.sha256).lower():
            raise ModelRejected(
                f"{what}: the bytes served do not hash to the listed SHA-256 {remote.sha256}",
                reason="hash_mismatch_download",
                path=remote.path,
                listed_sha256=remote.sha256,
            )
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return written


def fill_folder(
    dest_dir: str | Path, files: Sequence[RemoteFile], copy_one: Callable[[RemoteFile, Path], None]
) -> Path:
    """Create `dest_dir` and copy each listed file into it with `copy_one(remote, target)`.

    On any failure the files already written are removed again, so the folder is left empty.

    Returns:
        The folder.

    Raises:
        StorageError: `dest_dir` exists and is not empty (reason `dest_not_empty`); or
            whatever `copy_one` raises.
    """
    dest = Path(dest_dir)
    if dest.exists() and any(dest.iterdir()):
        raise StorageError(f"download target {dest} is not empty", reason="dest_not_empty")
    dest.mkdir(parents=True, exist_ok=True)
    done: list[Path] = []
    try:
        for remote in files:
            target = dest / remote.path
            copy_one(remote, target)
            done.append(target)
    except BaseException:
        for target in done:
            target.unlink(missing_ok=True)
        raise
    return dest


__all__ = [
    "CHUNK_BYTES",
    "Deadline",
    "copy_bounded",
    "download_deadline_s",
    "file_chunks",
    "fill_folder",
    "incomplete",
    "oversized",
]
