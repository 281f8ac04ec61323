"""A model store in a local folder: a stand-in for the Hub on a local network or in tests.

Layout (all names validated, so nothing escapes `root`)::

    root/<namespace>/<name>/repo.json                 {"private": bool, "revisions": [sha, ...]}
    root/<namespace>/<name>/revisions/<sha>.json      manifest: [{path, size, sha256}, ...]
    root/<namespace>/<name>/revisions/<sha>/<file>    the files, read-only

Revisions are content-addressed: sha = SHA-1 of the manifest text, so uploading the same
files twice gives the same revision, and a revision never changes once written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import constants
from finetune.errors import ModelRejected, RepoNotFound, StorageError
from finetune.storage.files import (
    is_allowed_file,
    is_safe_file_name,
    sha256_file,
    upload_files_in,
    validate_repo_id,
    validate_revision,
)
from finetune.storage.records import RemoteFile, RevisionInfo, SafetensorsSummary
from finetune.storage.safetensors_header import read_header
from finetune.storage.transfer import (
    Deadline,
    copy_bounded,
    download_deadline_s,
    file_chunks,
    fill_folder,
)

_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


def _write_json_atomic(path: Path, data: object) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


class DirModelStore:
    """Immutable, content-addressed model revisions under a folder.

    Args:
        root: the store's folder (created if missing).
        read_private: when False, reads of a private repo raise `RepoNotFound`, as the Hub
            does for a reader without access (use it to test the private-then-public upload).
        download_base_s, download_min_rate_bytes_s: a download without an explicit deadline
            gets `base + bytes / rate` seconds (the folder may be a slow network mount).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        read_private: bool = True,
        download_base_s: float = constants.DOWNLOAD_BASE_S,
        download_min_rate_bytes_s: float = constants.DOWNLOAD_MIN_RATE_BYTES_S,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.read_private = read_private
        self.download_base_s = download_base_s
        self.download_min_rate_bytes_s = download_min_rate_bytes_s

    def __repr__(self) -> str:
        return f"DirModelStore({str(self.root)!r})"

    # -- paths and metadata -------------------------------------------------------------
    def _repo_dir(self, repo_id: str) -> Path:
        namespace, name = validate_repo_id(repo_id)
        return self.root / namespace / name

    def _repo_meta(self, repo_id: str) -> dict:
        meta_path = self._repo_dir(repo_id) / "repo.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RepoNotFound(
                f"repo {repo_id} not found in {self.root}", repo_id=repo_id
            ) from None
        if meta.get("private") and not self.read_private:
            raise RepoNotFound(f"repo {repo_id} not found (private)", repo_id=repo_id)
        return meta

    def _manifest(self, repo_id: str, revision: str) -> list[dict]:
        validate_revision(revision)
        meta = self._repo_meta(repo_id)
        if revision not in meta.get("revisions", []):
            raise RepoNotFound(
                f"revision {revision} not found in {repo_id}", repo_id=repo_id, revision=revision
            )
        path = self._repo_dir(repo_id) / "revisions" / f"{revision}.json"
        return json.loads(path.read_text(encoding="utf-8"))

    # -- writes -------------------------------------------------------------------------
    def upload(self, model_dir: str | Path, repo_id: str, *, private: bool = True) -> str:
        """Copy the allowed files of `model_dir` (and its manifest) into a new (or identical) revision.

        Returns:
            The 40-hex revision sha (the same for the same files).

        Raises:
            StorageError: bad repo id, or no allowed file in `model_dir` (reason `empty_upload`).
        """
        repo_dir = self._repo_dir(repo_id)
        files = upload_files_in(model_dir)
        if not files:
            raise StorageError(f"nothing to upload from {model_dir}", reason="empty_upload")
        revisions = repo_dir / "revisions"
        revisions.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=revisions, prefix=".upload-"))
        try:
            manifest = []
            for src in files:
                dst = staging / src.name
                shutil.copyfile(src, dst)  # follows symlinks: the store holds real bytes
                manifest.append(
                    {"path": src.name, "size": dst.stat().st_size, "sha256": sha256_file(dst).hex()}
                )
            text = json.dumps(manifest, sort_keys=True)
            sha = hashlib.sha1(text.encode("utf-8")).hexdigest()
            final = revisions / sha
            if not final.exists():
                for dst in staging.iterdir():
                    dst.chmod(_READ_ONLY)
                (revisions / f"{sha}.json").write_text(text, encoding="utf-8")
                os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        meta_path = repo_dir / "repo.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"private": private}
        if sha not in meta.setdefault("revisions", []):
            meta["revisions"].append(sha)
        _write_json_atomic(meta_path, meta)
        return sha

    def set_private(self, repo_id: str, private: bool) -> None:
        """Record the repo's visibility.

        Raises:
            RepoNotFound: no such repo.
        """
        meta_path = self._repo_dir(repo_id) / "repo.json"
        if not meta_path.exists():
            raise RepoNotFound(f"repo {repo_id} not found in {self.root}", repo_id=repo_id)
        meta = json.loads(meta_path.read_text())
        meta["private"] = bool(private)
        _write_json_atomic(meta_path, meta)

    # -- reads --------------------------------------------------------------------------
    def revision_info(self, repo_id: str, revision: str) -> RevisionInfo:
        """List the revision's files from its manifest (no file is read).

        Raises:
            RepoNotFound: no such repo or revision.
            StorageError: bad repo id or revision.
        """
        files = tuple(RemoteFile(**entry) for entry in self._manifest(repo_id, revision))
        return RevisionInfo(
            repo_id=repo_id, revision=revision, files=files, total_bytes=sum(f.size for f in files)
        )

    def read_file(self, repo_id: str, revision: str, path: str, *, max_bytes: int) -> bytes | None:
        """The bytes of one small file of the revision (the submission manifest), or None.

        Raises:
            RepoNotFound: no such repo or revision.
            ModelRejected: the listed file is over `max_bytes` (reason `oversized_file`).
        """
        if not is_safe_file_name(path) or "/" in path:
            raise StorageError(f"not a top-level file name: {path!r}", reason="bad_file_name")
        entry = next((e for e in self._manifest(repo_id, revision) if e["path"] == path), None)
        if entry is None:
            return None
        if entry["size"] > max_bytes:
            raise ModelRejected(f"{path} is {entry['size']} bytes, over {max_bytes}", reason="oversized_file")
        with open(self._repo_dir(repo_id) / "revisions" / revision / path, "rb") as f:
            return f.read(max_bytes + 1)

    def safetensors_metadata(self, repo_id: str, revision: str) -> SafetensorsSummary:
        """Sum the parameters in the revision's safetensors headers.

        Raises:
            RepoNotFound: no such repo or revision.
            ModelRejected: a header is corrupt (reason `corrupt_safetensors`).
        """
        folder = self._repo_dir(repo_id) / "revisions" / revision
        dtypes: dict[str, int] = {}
        tensors = 0
        for entry in self._manifest(repo_id, revision):
            # Allowed names only: a planted manifest may list paths that point elsewhere.
            if is_allowed_file(entry["path"]) and entry["path"].endswith(".safetensors"):
                for tensor in read_header(folder / entry["path"]):
                    dtypes[tensor.dtype] = dtypes.get(tensor.dtype, 0) + tensor.parameter_count
                    tensors += 1
        return SafetensorsSummary(parameter_count=sum(dtypes.values()), dtypes=dtypes, tensor_count=tensors)

    def download(
        self, repo_id: str, revision: str, dest_dir: str | Path, *, deadline_s: float | None = None
    ) -> Path:
        """Copy the revision's allowed files into `dest_dir` as real, writable files, bounded.

        The manifest is the listing: a stored file larger than its entry is cut off at the
        listed size (a planted file, or a symlink to a device, is never copied whole), and
        every file is checked against the entry's SHA-256.

        Args:
            repo_id, revision: the revision.
            dest_dir: created if missing; it must be empty.
            deadline_s: wall-clock limit of the whole copy; None gives
                `download_base_s + bytes / download_min_rate_bytes_s`.

        Returns:
            `dest_dir`, holding exactly the listed allowed files (left empty on failure).

        Raises:
            RepoNotFound: no such repo or revision.
            ModelRejected: a file is larger than listed (reason `oversized_download`) or does
                not match its listed SHA-256 (`hash_mismatch_download`).
            StorageError: `dest_not_empty`, `incomplete_download`, `download_timeout`, or a
                stored file is missing (`file_not_found`).
        """
        info = self.revision_info(repo_id, revision)
        if deadline_s is None:
            deadline_s = download_deadline_s(
                info.download_bytes,
                base_s=self.download_base_s,
                min_rate_bytes_s=self.download_min_rate_bytes_s,
            )
        deadline = Deadline(deadline_s)
        folder = self._repo_dir(repo_id) / "revisions" / revision

        def copy_one(remote: RemoteFile, target: Path) -> None:
            what = f"copy {repo_id}@{revision[:8]}/{remote.path}"
            source = folder / remote.path
            if not source.exists():
                raise StorageError(f"{what}: the stored file is missing", reason="file_not_found")
            copy_bounded(file_chunks(source), target, remote, deadline=deadline, what=what)

        return fill_folder(dest_dir, info.download_files, copy_one)


__all__ = ["DirModelStore"]
