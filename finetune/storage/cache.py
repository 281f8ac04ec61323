"""The validator's disk cache of downloaded models: one folder per hotkey and revision.

Layout::

    root/<hotkey>/<revision>/            real files (never symlinks into shared blobs)
    root/<hotkey>/.<revision>.used       last-used time (seconds since the epoch, as text)
    root/.tmp/<random>/                  downloads in progress

A download goes to a temporary folder under `root` first and is renamed into place only when
complete, so a folder at `path_for(hotkey, revision)` is always a complete copy (the rename is
atomic on one filesystem). Free space is checked before a download starts, and every download
runs under a deadline that grows with its size (`base + bytes / min_rate`): a download that
times out, or that the store's bounded copy rejects, leaves nothing in the cache.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import constants
from finetune.errors import DiskFull, StorageError
from finetune.storage.files import validate_revision
from finetune.storage.store import ModelStore
from finetune.storage.transfer import download_deadline_s

logger = logging.getLogger(__name__)

_HOTKEY = re.compile(r"[A-Za-z0-9]{1,64}")  # ss58 addresses are base58; no path characters
_REVISION = re.compile(r"[0-9a-f]{40}")
_TMP = ".tmp"


class _Usage(NamedTuple):
    total: int
    used: int
    free: int


def _validate_hotkey(hotkey: str) -> str:
    if not isinstance(hotkey, str) or not _HOTKEY.fullmatch(hotkey):
        raise StorageError(f"invalid hotkey {hotkey!r} for a cache path", reason="bad_hotkey")
    return hotkey


def _rmtree(path: Path) -> None:
    def _retry_writable(func, target, _info):  # read-only files copied from a store
        os.chmod(target, stat.S_IRWXU)
        func(target)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_retry_writable)
    else:
        shutil.rmtree(path, onerror=_retry_writable)


class ModelCache:
    """Downloaded models on local disk, with a free-space guard and age-based cleanup.

    Args:
        root: cache folder (created if missing).
        min_free_bytes: low watermark: no download starts if it would leave less free space.
        grace_period_s: an unreferenced model is deleted only once unused for this long.
        download_base_s, download_min_rate_bytes_s: a model of N bytes must download within
            `base + N / rate` seconds (unless `fetch` is given its own deadline).
        disk_usage: `shutil.disk_usage`-like function (injectable for tests).
        clock: time source in seconds (injectable for tests).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        min_free_bytes: int,
        grace_period_s: float,
        download_base_s: float = constants.DOWNLOAD_BASE_S,
        download_min_rate_bytes_s: float = constants.DOWNLOAD_MIN_RATE_BYTES_S,
        disk_usage: Callable[[str], _Usage] = shutil.disk_usage,  # type: ignore[assignment]
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.min_free_bytes = min_free_bytes
        self.grace_period_s = grace_period_s
        self.download_base_s = download_base_s
        self.download_min_rate_bytes_s = download_min_rate_bytes_s
        self._disk_usage = disk_usage
        self._clock = clock
        self._in_use: dict[tuple[str, str], int] = {}  # (hotkey, revision) -> users (rounds)
        self._in_use_lock = threading.Lock()

    def path_for(self, hotkey: str, revision: str) -> Path:
        """Where the model of `hotkey` at `revision` lives (whether or not it is cached).

        Raises:
            StorageError: invalid hotkey or revision (reasons `bad_hotkey`, `bad_revision`).
        """
        return self.root / _validate_hotkey(hotkey) / validate_revision(revision)

    def _marker(self, hotkey: str, revision: str) -> Path:
        return self.root / hotkey / f".{revision}.used"

    def _check_marker(self, hotkey: str, revision: str) -> Path:
        return self.root / hotkey / f".{revision}.checking"

    def check_attempts(self, hotkey: str, revision: str) -> int:
        """How many checks of this revision began and never finished (the process died)."""
        self.path_for(hotkey, revision)
        try:
            return int(self._check_marker(hotkey, revision).read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def begin_check(self, hotkey: str, revision: str) -> int:
        """Record, durably, that a check of this revision starts. Returns the attempt number.

        If the check kills the validator, the record outlives it: the next start sees an
        unfinished attempt (`check_attempts`).
        """
        attempt = self.check_attempts(hotkey, revision) + 1
        marker = self._check_marker(hotkey, revision)
        marker.parent.mkdir(parents=True, exist_ok=True)
        with open(marker, "w", encoding="ascii") as handle:
            handle.write(f"{attempt}\n")
            handle.flush()
            os.fsync(handle.fileno())
        return attempt

    def end_check(self, hotkey: str, revision: str) -> None:
        """The check finished (passed or rejected): forget its attempts."""
        self._check_marker(hotkey, revision).unlink(missing_ok=True)

    @contextmanager
    def using(self, hotkey: str, revision: str) -> Iterator[None]:
        """Mark a model in use (a round is scoring it): neither pruning nor cleanup deletes it."""
        key = (hotkey, revision)
        with self._in_use_lock:
            self._in_use[key] = self._in_use.get(key, 0) + 1
        try:
            self.touch(hotkey, revision)
            yield
        finally:
            with self._in_use_lock:
                self._in_use[key] -= 1
                if not self._in_use[key]:
                    del self._in_use[key]

    def _is_in_use(self, hotkey: str, revision: str) -> bool:
        with self._in_use_lock:
            return (hotkey, revision) in self._in_use

    def prune(self, hotkey: str, keep: str | None = None) -> list[Path]:
        """Delete every cached revision of `hotkey` but `keep` and those in use, at once.

        A hotkey's older revisions are referenced by nothing once it commits a new one, so
        they do not wait for the grace period (one hotkey re-committing every few minutes
        could otherwise hold dozens of 20 GB models for hours). At most two revisions of a
        hotkey are then on disk: the one a round is scoring and the one being fetched.

        Returns:
            The model folders deleted.
        """
        folder = self.root / _validate_hotkey(hotkey)
        if not folder.is_dir():
            return []
        deleted = []
        for model_dir in sorted(p for p in folder.iterdir() if p.is_dir() and _REVISION.fullmatch(p.name)):
            if model_dir.name == keep or self._is_in_use(hotkey, model_dir.name):
                continue
            _rmtree(model_dir)
            self._marker(hotkey, model_dir.name).unlink(missing_ok=True)
            self._check_marker(hotkey, model_dir.name).unlink(missing_ok=True)
            deleted.append(model_dir)
        if deleted:
            logger.info("removed %d superseded revision(s) of %s", len(deleted), hotkey)
        return deleted

    def touch(self, hotkey: str, revision: str) -> None:
        """Record that the model was used now (it restarts the grace period)."""
        self.path_for(hotkey, revision)
        self._marker(hotkey, revision).write_text(f"{self._clock():.3f}\n")

    def last_used(self, hotkey: str, revision: str) -> float:
        """When the model was last used; 0.0 if never recorded (or unreadable)."""
        try:
            return float(self._marker(hotkey, revision).read_text())
        except (OSError, ValueError):
            return 0.0

    def check_free_space(self, needed_bytes: int = 0) -> None:
        """Refuse to start a download that would take free disk below the watermark.

        Raises:
            DiskFull: free - needed_bytes < min_free_bytes.
        """
        free = self._disk_usage(str(self.root)).free
        if free - needed_bytes < self.min_free_bytes:
            raise DiskFull(
                f"free disk {free} B minus {needed_bytes} B to download is below the "
                f"{self.min_free_bytes} B watermark at {self.root}",
                free_bytes=free,
                needed_bytes=needed_bytes,
            )

    def fetch(
        self,
        store: ModelStore,
        hotkey: str,
        repo_id: str,
        revision: str,
        *,
        expected_bytes: int | None = None,
        deadline_s: float | None = None,
    ) -> Path:
        """Return the cached model folder, downloading it first if needed.

        Args:
            store: where to download from.
            hotkey: the miner's hotkey (one folder per hotkey).
            repo_id, revision: the committed model.
            expected_bytes: download size if already known (from `RevisionInfo.download_bytes`);
                otherwise it is read from the store before downloading.
            deadline_s: wall-clock limit of the download; None gives
                `download_base_s + expected_bytes / download_min_rate_bytes_s`.

        The hotkey's other revisions are deleted first (`prune`): a new commitment supersedes
        them, unless a round is scoring one right now.

        Returns:
            The folder holding the model's files.

        Raises:
            DiskFull: not enough free disk to download.
            ModelRejected: the store served bytes that disagree with its listing (reasons
                `oversized_download`, `hash_mismatch_download`).
            RepoNotFound, StorageError: from the store (e.g. `download_timeout`,
                `incomplete_download`), or an invalid hotkey/revision.
        """
        final = self.path_for(hotkey, revision)
        self.prune(hotkey, keep=revision)  # this hotkey's older revisions are superseded now
        if final.is_dir():
            self.touch(hotkey, revision)
            return final
        self.check_free_space(0)  # cheap check before even asking the store
        if expected_bytes is None:
            expected_bytes = store.revision_info(repo_id, revision).download_bytes
        self.check_free_space(expected_bytes)
        if deadline_s is None:
            deadline_s = download_deadline_s(
                expected_bytes,
                base_s=self.download_base_s,
                min_rate_bytes_s=self.download_min_rate_bytes_s,
            )
        tmp_root = self.root / _TMP
        tmp_root.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=tmp_root, prefix=f"{hotkey}-"))
        try:
            store.download(repo_id, revision, staging / "model", deadline_s=deadline_s)
            self._move_into_place(staging / "model", hotkey, revision)
        finally:
            if staging.exists():
                _rmtree(staging)
        logger.info("cached %s@%s for %s at %s", repo_id, revision[:8], hotkey, final)
        return final

    def _move_into_place(self, model: Path, hotkey: str, revision: str) -> None:
        final = self.path_for(hotkey, revision)
        for attempt in range(3):
            # The cleanup thread removes empty hotkey folders, possibly right after our mkdir.
            final.parent.mkdir(exist_ok=True)
            try:
                self.touch(hotkey, revision)  # before the rename: never seen unmarked (stale)
                os.rename(model, final)
                return
            except FileNotFoundError:
                if attempt == 2:
                    raise
            except OSError:
                if not final.is_dir():  # not a concurrent fetch of the same model
                    raise
                return

    def cleanup(self, keep: Mapping[str, str], now: float | None = None) -> list[Path]:
        """Delete cached models that are not kept and unused for longer than the grace period.

        Args:
            keep: hotkey -> revision still referenced (never deleted, whatever their age).
            now: current time (defaults to the clock).

        Returns:
            The model folders deleted.
        """
        now = self._clock() if now is None else now
        deleted: list[Path] = []
        for hotkey_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if hotkey_dir.name == _TMP:
                self._cleanup_tmp(hotkey_dir, now)
                continue
            if not _HOTKEY.fullmatch(hotkey_dir.name):
                continue  # not ours: leave it alone
            models = (p for p in hotkey_dir.iterdir() if p.is_dir() and _REVISION.fullmatch(p.name))
            for model_dir in sorted(models):
                if keep.get(hotkey_dir.name) == model_dir.name or self._is_in_use(hotkey_dir.name, model_dir.name):
                    continue
                used = self.last_used(hotkey_dir.name, model_dir.name) or model_dir.stat().st_mtime
                if now - used >= self.grace_period_s:
                    _rmtree(model_dir)
                    self._marker(hotkey_dir.name, model_dir.name).unlink(missing_ok=True)
                    self._check_marker(hotkey_dir.name, model_dir.name).unlink(missing_ok=True)
                    deleted.append(model_dir)
            if not any(hotkey_dir.iterdir()):
                try:
                    hotkey_dir.rmdir()
                except OSError:  # a concurrent fetch just put something there
                    pass
        return deleted

    def _cleanup_tmp(self, tmp_root: Path, now: float) -> None:
        # Staging folders are removed by fetch; leftovers come from a crash mid-download. A
        # download in progress (newest file still changing) is spared, and one that fetch
        # removes while we look is simply skipped.
        for staging in tmp_root.iterdir():
            try:
                newest = max(
                    [staging.stat().st_mtime, *(p.lstat().st_mtime for p in staging.rglob("*"))]
                )
                if now - newest >= self.grace_period_s:
                    _rmtree(staging)
            except FileNotFoundError:
                continue


__all__ = ["ModelCache"]
