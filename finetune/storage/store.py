"""The model store protocol, and `open_store` to build one from a settings string."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from finetune.errors import ConfigError
from finetune.storage.records import RevisionInfo, SafetensorsSummary


@runtime_checkable
class ModelStore(Protocol):
    """Where miners push models and validators fetch them, by pinned revision.

    Implementations: `HfModelStore` (the Hugging Face Hub) and `DirModelStore` (a local folder).
    Reads take a 40-hex commit sha, never a branch name, so what was committed on chain is
    what is read. A missing repo or revision raises `RepoNotFound`; bytes that disagree with
    the listing raise `ModelRejected` (`oversized_download`, `hash_mismatch_download`); other
    failures raise a `StorageError` whose `reason` names the cause.
    """

    def upload(self, model_dir: str | Path, repo_id: str, *, private: bool = True) -> str:
        """Push the allowed files of `model_dir` as one commit; return its 40-hex sha."""
        ...

    def set_private(self, repo_id: str, private: bool) -> None:
        """Change a repo's visibility."""
        ...

    def revision_info(self, repo_id: str, revision: str) -> RevisionInfo:
        """List a revision's files and sizes without downloading any weights."""
        ...

    def safetensors_metadata(self, repo_id: str, revision: str) -> SafetensorsSummary:
        """Parameter count per dtype from the safetensors headers only."""
        ...

    def read_file(self, repo_id: str, revision: str, path: str, *, max_bytes: int) -> bytes | None:
        """One small top-level file of the revision (the submission manifest), None if absent;
        a listed size over `max_bytes` raises `ModelRejected` (`oversized_file`)."""
        ...

    def download(
        self, repo_id: str, revision: str, dest_dir: str | Path, *, deadline_s: float | None = None
    ) -> Path:
        """Write the revision's allowed files into `dest_dir` (real files); return it.

        Bounded (`finetune.storage.transfer`): no file is written past its listed size, a
        listed SHA-256 is checked, and the whole download ends within `deadline_s` seconds
        (None: the store's own `base + bytes / rate` default). On failure `dest_dir` holds
        no file of this download.
        """
        ...


def open_store(spec: str, **kwargs: object) -> ModelStore:
    """Build a store from its settings string.

    Args:
        spec: `hf` for the Hugging Face Hub, or `dir:PATH` for a local folder store.
        **kwargs: passed to the store's constructor (e.g. `token`, `endpoint`, `timeout_s`).

    Returns:
        The store.

    Raises:
        ConfigError: unknown spec, or `dir:` without a path.
    """
    if spec == "hf":
        from finetune.storage.hf_store import HfModelStore

        return HfModelStore(**kwargs)  # type: ignore[arg-type]
    if spec.startswith("dir:"):
        path = spec[len("dir:") :]
        if not path:
            raise ConfigError("model store 'dir:' needs a folder, e.g. 'dir:/srv/models'")
        from finetune.storage.dir_store import DirModelStore

        return DirModelStore(path, **kwargs)  # type: ignore[arg-type]
    raise ConfigError(f"unknown model store {spec!r}; known: 'hf', 'dir:PATH'")


__all__ = ["ModelStore", "open_store"]
