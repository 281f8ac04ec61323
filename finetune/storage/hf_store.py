"""The Hugging Face Hub as a model store, through the real `huggingface_hub` client.

Every call goes through `_call`, the one place that maps the client's failures to our errors
and retries the transient ones (timeouts, dropped connections, 429 and 5xx) with exponential
back-off. Reads are pinned to a 40-hex commit sha, so no branch is ever resolved.

A download is one GET of the `resolve` URL per listed file, through the client's own HTTP
session, streamed through `transfer.copy_bounded`: no file grows past its listed size, LFS
files are checked against their listed SHA-256, and the whole download (retries included)
runs under one `Deadline` that also caps every request's read timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import constants
from finetune.errors import FinetuneError, ModelRejected, RepoNotFound, StorageError
from finetune.storage.files import (
    is_safe_file_name,
    upload_files_in,
    validate_repo_id,
    validate_revision,
)
from finetune.storage.records import RemoteFile, RevisionInfo, SafetensorsSummary
from finetune.storage.transfer import (
    Deadline,
    copy_bounded,
    download_deadline_s,
    fill_folder,
    incomplete,
    oversized,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


_ERROR_BODY_BYTES = 64 * 1024  # Hub error bodies are a short JSON; read no more of one


def _httpx() -> ModuleType:
    try:
        import httpx2 as httpx  # huggingface_hub >= 2
    except ImportError:  # pragma: no cover - huggingface_hub 1.x uses httpx
        import httpx  # type: ignore[no-redef]
    return httpx


def _classify(exc: BaseException, what: str) -> tuple[FinetuneError, bool]:
    """Map a client exception to (our error, whether a retry may help)."""
    from huggingface_hub import errors as hf_errors

    httpx = _httpx()

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
    if isinstance(exc, httpx.RequestError):  # too many redirects, an undecodable body
        return StorageError(f"{what}: bad answer ({type(exc).__name__})", reason="hub_error"), False
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
        timeout_s: per-request timeout where the client accepts one (a download's requests
            get at most what is left of its deadline).
        retries: extra attempts after a transient failure.
        backoff_s: first back-off wait; doubles each attempt, capped at 30 s.
        download_base_s, download_min_rate_bytes_s: a download without an explicit deadline
            gets `base + bytes / rate` seconds.
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
        download_base_s: float = constants.DOWNLOAD_BASE_S,
        download_min_rate_bytes_s: float = constants.DOWNLOAD_MIN_RATE_BYTES_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from huggingface_hub import HfApi

        self._api = HfApi(endpoint=endpoint, token=token)
        self._token = token
        self._endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.download_base_s = download_base_s
        self.download_min_rate_bytes_s = download_min_rate_bytes_s
        self._sleep = sleep
        # A revision is a full commit sha, so its listing never changes: inspecting, reading
        # headers and downloading one model list it once, not three times.
        self._listings: dict[tuple[str, str], RevisionInfo] = {}

    def __repr__(self) -> str:
        return f"HfModelStore(endpoint={self._endpoint or 'https://huggingface.co'!r})"

    def _call(self, what: str, fn: Callable[[], T], *, deadline: Deadline | None = None) -> T:
        for attempt in range(self.retries + 1):
            if deadline is not None:
                deadline.check(what)
            try:
                return fn()
            except FinetuneError:
                raise  # already ours: a bounded copy's verdict on the bytes served
            except Exception as exc:  # narrowed by _classify, which re-raises the unknown
                error, transient = _classify(exc, what)
                if transient and deadline is not None and deadline.expired:
                    raise deadline.timeout(what) from exc  # a read cut short by the deadline
                if not transient or attempt == self.retries:
                    raise error from exc
                wait = min(self.backoff_s * 2**attempt, 30.0)
                if deadline is not None:
                    wait = min(wait, max(deadline.remaining(), 0.0))
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
        files = upload_files_in(model_dir)
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

    def download(
        self, repo_id: str, revision: str, dest_dir: str | Path, *, deadline_s: float | None = None
    ) -> Path:
        """Download the revision's allowed files into `dest_dir` as real files, bounded.

        Each listed file is one streamed GET of its `resolve` URL (redirects followed), cut
        off the moment it exceeds its listed size and checked against its listed SHA-256 when
        the listing has one (LFS files).

        Args:
            repo_id, revision: the pinned revision.
            dest_dir: created if missing; it must be empty.
            deadline_s: wall-clock limit of the whole download; None gives
                `download_base_s + bytes / download_min_rate_bytes_s`.

        Returns:
            `dest_dir`, holding exactly the listed allowed files (left empty on failure).

        Raises:
            RepoNotFound: no such repo or revision.
            ModelRejected: a file is larger than listed (reason `oversized_download`) or does
                not match its listed SHA-256 (`hash_mismatch_download`).
            StorageError: `dest_not_empty`, `incomplete_download`, `download_timeout`, or a
                Hub failure.
        """
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers

        info = self.revision_info(repo_id, revision)
        if deadline_s is None:
            deadline_s = download_deadline_s(
                info.download_bytes,
                base_s=self.download_base_s,
                min_rate_bytes_s=self.download_min_rate_bytes_s,
            )
        deadline = Deadline(deadline_s)
        headers = build_hf_headers(token=self._token)
        headers["Accept-Encoding"] = "identity"  # sizes and hashes are of the stored bytes

        def copy_one(remote: RemoteFile, target: Path) -> None:
            url = hf_hub_url(repo_id, remote.path, revision=revision, endpoint=self._endpoint)
            what = f"download {repo_id}@{revision[:8]}/{remote.path}"
            self._call(
                what,
                lambda: self._stream_file(url, headers, remote, target, deadline, what),
                deadline=deadline,
            )

        return fill_folder(dest_dir, info.download_files, copy_one)

    def read_file(self, repo_id: str, revision: str, path: str, *, max_bytes: int) -> bytes | None:
        """The bytes of one small file of the revision (the submission manifest), or None.

        Bounded like a download: its listed size, at most `max_bytes`, within the store's
        download allowance.

        Raises:
            RepoNotFound: no such repo or revision.
            ModelRejected: the listed file is over `max_bytes` (reason `oversized_file`).
            StorageError: a Hub failure.
        """
        import tempfile

        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers

        if not is_safe_file_name(path) or "/" in path:
            raise StorageError(f"not a top-level file name: {path!r}", reason="bad_file_name")
        remote = next((f for f in self.revision_info(repo_id, revision).files if f.path == path), None)
        if remote is None:
            return None
        if remote.size > max_bytes:
            raise ModelRejected(f"{path} is {remote.size} bytes, over {max_bytes}", reason="oversized_file")
        deadline = Deadline(self.download_base_s)
        headers = build_hf_headers(token=self._token)
        headers["Accept-Encoding"] = "identity"
        url = hf_hub_url(repo_id, path, revision=revision, endpoint=self._endpoint)
        what = f"read {repo_id}@{revision[:8]}/{path}"
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "file"
            self._call(what, lambda: self._stream_file(url, headers, remote, target, deadline, what),
                       deadline=deadline)
            return target.read_bytes()

    def _stream_file(
        self,
        url: str,
        headers: dict[str, str],
        remote: RemoteFile,
        target: Path,
        deadline: Deadline,
        what: str,
    ) -> None:
        from huggingface_hub.utils import get_session

        httpx = _httpx()
        # A silent connection must end by the deadline too, not only one that sends chunks.
        timeout = min(self.timeout_s, deadline.remaining())
        if timeout <= 0:
            raise deadline.timeout(what)
        with get_session().stream(
            "GET", url, headers=headers, timeout=httpx.Timeout(timeout), follow_redirects=True
        ) as response:
            _raise_for_download_status(response, what)
            _check_announced_size(response, remote, what)
            copy_bounded(response.iter_bytes(), target, remote, deadline=deadline, what=what)


def _raise_for_download_status(response, what: str) -> None:
    """Raise the client's error for a failed GET, reading at most a small part of its body."""
    from huggingface_hub.utils import hf_raise_for_status

    status = response.status_code
    if status == 200:
        return
    if status < 400:  # a redirect left unfollowed, or a partial answer we never asked for
        raise StorageError(f"{what}: unexpected HTTP {status}", reason="hub_error", status=status)
    body = b""
    for chunk in response.iter_raw():
        body += chunk
        if len(body) >= _ERROR_BODY_BYTES:
            break
    skip = {"content-length", "content-encoding", "transfer-encoding"}
    small = _httpx().Response(
        status,
        headers=[(k, v) for k, v in response.headers.multi_items() if k.lower() not in skip],
        content=body[:_ERROR_BODY_BYTES],
        request=response.request,
    )
    hf_raise_for_status(small)  # raises the mapped HfHubHTTPError subclass
    raise StorageError(f"{what}: HTTP {status}", reason="hub_error", status=status)


def _check_announced_size(response, remote: RemoteFile, what: str) -> None:
    """Fail before reading a body whose announced length already disagrees with the listing."""
    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
        return  # the length is of the encoded body; the copy counts the decoded bytes
    try:
        announced = int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return  # no usable length: the copy's own count decides
    if announced > remote.size:
        raise oversized(what, remote, announced, announced=True)
    if announced < remote.size:
        raise incomplete(what, remote, announced, announced=True)


__all__ = ["HfModelStore"]
