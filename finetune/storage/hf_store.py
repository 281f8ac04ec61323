"""The Hugging Face Hub as a model store, through the real `huggingface_hub` client.

Every call goes through `_call`, the one place that maps the client's failures to our errors
and retries the transient ones (timeouts, dropped connections, 429 and 5xx) with exponential
back-off. Reads are pinned to a 40-hex commit sha, so no branch is ever resolved.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from finetune.errors import FinetuneError, ModelRejected, RepoNotFound, StorageError
from finetune.storage.files import (
    allowed_files_in,
    is_allowed_file,
    validate_repo_id,
    validate_revision,
)
from finetune.storage.records import RemoteFile, RevisionInfo, SafetensorsSummary

logger = logging.getLogger(__name__)

T = TypeVar("T")
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _classify(exc: BaseException, what: str) -> tuple[FinetuneError, bool]:
    """Map a client exception to (our error, whether a retry may help)."""
    from huggingface_hub import errors as hf_errors

    try:
        import httpx2 as httpx  # huggingface_hub >= 2
    except ImportError:  # pragma: no cover - huggingface_hub 1.x uses httpx
        import httpx  # type: ignore[no-redef]

    if isinstance(exc, (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError)):
        return RepoNotFound(f"{what}: not found ({type(exc).__name__})"), False
    if isinstance(exc, hf_errors.RemoteEntryNotFoundError):
        return StorageError(f"{what}: file not found", reason="file_not_found"), False
    if isinstance(exc, hf_errors.SafetensorsParsingError):
        return ModelRejected(f"{what}: {exc}", reason="corrupt_safetensors"), False
    if isinstance(exc, hf_errors.OfflineModeIsEnabled):
        return StorageError(f"{what}: HF_HUB_OFFLINE is set", reason="hub_offline"), False
    if isinstance(exc, httpx.TimeoutException):
        return StorageError(f"{what}: timed out", reason="hub_timeout"), True
    if isinstance(exc, (httpx.TransportError, hf_errors.LocalEntryNotFoundError)):
        return StorageError(f"{what}: hub unreachable ({exc})", reason="hub_unreachable"), True
    if isinstance(exc, hf_errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        transient = status in _TRANSIENT_STATUS
        reason = "hub_unavailable" if transient else "hub_error"
        return StorageError(f"{what}: HTTP {status}", reason=reason, status=status), transient
    raise exc  # not a transport or Hub error: a bug, let it surface


_MAX_CACHED_LISTINGS = 512  # a few hundred bytes each; one per model a validator has seen


class HfModelStore:
    """Models on the Hugging Face Hub (or any server that speaks its API).

    Args:
        token: access token; None uses the locally saved one, False sends none.
        endpoint: Hub URL (None for huggingface.co; tests pass a loopback server).
        timeout_s: per-request timeout where the client accepts one.
        retries: extra attempts after a transient failure.
        backoff_s: first back-off wait; doubles each attempt, capped at 30 s.
        sleep: injectable for tests.
    """

    def __init__(
        self,
        *,
        token: str | bool | None = None,
        endpoint: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from huggingface_hub import HfApi

        self._api = HfApi(endpoint=endpoint, token=token)
        self._token = token
        self._endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._sleep = sleep
        # A revision is a full commit sha, so its listing never changes: inspecting, reading
        # headers and downloading one model list it once, not three times.
        self._listings: dict[tuple[str, str], RevisionInfo] = {}

    def __repr__(self) -> str:
        return f"HfModelStore(endpoint={self._endpoint or 'https://huggingface.co'!r})"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as exc:  # narrowed by _classify, which re-raises the unknown
                error, transient = _classify(exc, what)
                if not transient or attempt == self.retries:
                    raise error from exc
                wait = min(self.backoff_s * 2**attempt, 30.0)
                logger.warning(
                    "%s failed (%s); retry %d in %.1fs", what, error.reason, attempt + 1, wait
                )
                self._sleep(wait)
        raise AssertionError("unreachable")  # the loop always returns or raises

    # -- writes -------------------------------------------------------------------------
    def upload(self, model_dir: str | Path, repo_id: str, *, private: bool = True) -> str:
        """Create the repo if needed and push the allowed files of `model_dir` as one commit.

        Remote files that are not part of this upload are deleted in the same commit, so the
        new revision holds exactly the uploaded files (and the Hub's `.gitattributes`).

        Returns:
            The commit sha.

        Raises:
            StorageError: bad repo id, nothing to upload, or a Hub failure.
        """
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        validate_repo_id(repo_id)
        files = allowed_files_in(model_dir)
        if not files:
            raise StorageError(f"nothing to upload from {model_dir}", reason="empty_upload")
        api = self._api
        self._call(
            f"create {repo_id}", lambda: api.create_repo(repo_id, private=private, exist_ok=True)
        )
        remote = self._call(f"list {repo_id}", lambda: api.list_repo_files(repo_id))
        names = {p.name for p in files}
        operations: list = [
            CommitOperationDelete(path_in_repo=path)
            for path in remote
            if path not in names and path != ".gitattributes"
        ]
        operations += [
            CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in files
        ]
        commit = self._call(
            f"upload {repo_id}",
            lambda: api.create_commit(repo_id, operations, commit_message="Upload model"),
        )
        return validate_revision(commit.oid)

    def set_private(self, repo_id: str, private: bool) -> None:
        """Change the repo's visibility.

        Raises:
            RepoNotFound: no such repo (or no access).
            StorageError: other Hub failures.
        """
        validate_repo_id(repo_id)
        self._call(
            f"set visibility of {repo_id}",
            lambda: self._api.update_repo_settings(repo_id, private=private),
        )

    # -- reads --------------------------------------------------------------------------
    def revision_info(self, repo_id: str, revision: str) -> RevisionInfo:
        """List every file of the revision with its size (one API call, nothing downloaded).

        Raises:
            RepoNotFound: no such repo or revision.
            StorageError: bad ids, missing sizes, or a Hub failure.
        """
        validate_repo_id(repo_id)
        validate_revision(revision)
        cached = self._listings.get((repo_id, revision))
        if cached is not None:
            return cached
        info = self._call(
            f"model_info {repo_id}@{revision}",
            lambda: self._api.model_info(
                repo_id, revision=revision, files_metadata=True, timeout=self.timeout_s
            ),
        )
        if info.sha != revision:
            raise StorageError(
                f"{repo_id}: asked for {revision}, the Hub answered {info.sha}",
                reason="revision_mismatch",
            )
        files = []
        for sibling in info.siblings or []:
            if sibling.size is None:
                raise StorageError(
                    f"{repo_id}: no size for {sibling.rfilename}", reason="hub_error"
                )
            sha256 = sibling.lfs.sha256 if sibling.lfs is not None else None
            files.append(RemoteFile(path=sibling.rfilename, size=sibling.size, sha256=sha256))
        listing = RevisionInfo(
            repo_id=repo_id,
            revision=revision,
            files=tuple(files),
            total_bytes=sum(f.size for f in files),
        )
        if len(self._listings) >= _MAX_CACHED_LISTINGS:
            self._listings.pop(next(iter(self._listings)))  # oldest first
        self._listings[(repo_id, revision)] = listing
        return listing

    def safetensors_metadata(self, repo_id: str, revision: str) -> SafetensorsSummary:
        """Parameter counts from each allowed safetensors file's header (range requests).

        Raises:
            RepoNotFound: no such repo or revision.
            ModelRejected: a header does not parse (reason `corrupt_safetensors`).
            StorageError: a Hub failure.
        """
        info = self.revision_info(repo_id, revision)
        dtypes: dict[str, int] = {}
        tensors = 0
        for remote in info.download_files:
            if not remote.path.endswith(".safetensors"):
                continue
            meta = self._call(
                f"safetensors header {repo_id}/{remote.path}",
                lambda path=remote.path: self._api.parse_safetensors_file_metadata(
                    repo_id, path, revision=revision, timeout=self.timeout_s
                ),
            )
            for dtype, count in meta.parameter_count.items():
                dtypes[dtype] = dtypes.get(dtype, 0) + count
            tensors += len(meta.tensors)
        return SafetensorsSummary(parameter_count=sum(dtypes.values()), dtypes=dtypes, tensor_count=tensors)

    def download(self, repo_id: str, revision: str, dest_dir: str | Path) -> Path:
        """Download the revision's allowed files into `dest_dir` as real files.

        Raises:
            RepoNotFound: no such repo or revision.
            StorageError: `dest_dir` not empty, a Hub failure, or a file of the wrong size.
        """
        from huggingface_hub import snapshot_download

        info = self.revision_info(repo_id, revision)
        wanted = info.download_files
        dest = Path(dest_dir)
        if dest.exists() and any(dest.iterdir()):
            raise StorageError(f"download target {dest} is not empty", reason="dest_not_empty")
        dest.mkdir(parents=True, exist_ok=True)
        if not wanted:  # an empty pattern list would be read as "no filter"
            return dest
        self._call(
            f"download {repo_id}@{revision}",
            lambda: snapshot_download(
                repo_id,
                revision=revision,
                local_dir=dest,
                allow_patterns=[f.path for f in wanted],  # plain names: exact matches
                endpoint=self._endpoint,
                token=self._token,
                etag_timeout=self.timeout_s,
                max_workers=4,
            ),
        )
        shutil.rmtree(dest / ".cache", ignore_errors=True)  # the client's bookkeeping
        for remote in wanted:
            local = dest / remote.path
            if not local.is_file() or local.stat().st_size != remote.size:
                raise StorageError(
                    f"{repo_id}@{revision}: {remote.path} incomplete after download",
                    reason="incomplete_download",
                )
        for extra in dest.iterdir():
            if not is_allowed_file(extra.name):
                shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
        return dest


__all__ = ["HfModelStore"]
