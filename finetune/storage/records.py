"""Records the model stores return. Frozen: a revision's facts never change once read."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from finetune.storage.files import is_allowed_file


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RemoteFile(_Frozen):
    """One file of a revision as the store lists it (nothing downloaded).

    `sha256` is the hex digest when the store knows it (LFS files on the Hub, every file in a
    directory store), else None.
    """

    path: str
    size: int = Field(ge=0)
    sha256: str | None = None


class RevisionInfo(_Frozen):
    """A pinned revision of a repo: every file it holds, whether or not we would download it."""

    repo_id: str
    revision: str  # 40-hex commit sha
    files: tuple[RemoteFile, ...]
    total_bytes: int = Field(ge=0)  # the whole revision, what the size limit applies to

    @property
    def download_files(self) -> tuple[RemoteFile, ...]:
        """The files a validator downloads (allowed patterns only), sorted by path."""
        return tuple(
            sorted((f for f in self.files if is_allowed_file(f.path)), key=lambda f: f.path)
        )

    @classmethod
    def of_folder(cls, folder: str | Path) -> RevisionInfo:
        """The revision an upload of `folder` would create: its allowed files, nothing else."""
        files = tuple(
            RemoteFile(path=p.name, size=p.stat().st_size)
            for p in sorted(Path(folder).iterdir())
            if p.is_file() and is_allowed_file(p.name)
        )
        return cls(
            repo_id="local/model", revision="0" * 40, files=files, total_bytes=sum(f.size for f in files)
        )

    @property
    def download_bytes(self) -> int:
        """Bytes a download of this revision writes to disk."""
        return sum(f.size for f in self.download_files)


class SafetensorsSummary(_Frozen):
    """What the safetensors headers of a revision say, read without the weights."""

    parameter_count: int = Field(ge=0)  # elements over all tensors (tied copies counted twice)
    dtypes: dict[str, int]  # dtype name (F32, BF16, ...) -> parameters of that dtype
    tensor_count: int = Field(default=0, ge=0)


__all__ = ["RemoteFile", "RevisionInfo", "SafetensorsSummary"]
