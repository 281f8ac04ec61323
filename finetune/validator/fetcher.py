"""The validator's side of storage: look at a revision, download it to the cache, verify it."""

from __future__ import annotations

from finetune.chain import ModelId
from finetune.competition import ModelConstraints
from finetune.storage import ModelCache, ModelStore, check_model_dir, check_revision, verify_hashes


class StoreFetcher:
    """Implements the updater's `ModelFetcher` with a model store and the disk cache."""

    def __init__(self, store: ModelStore, cache: ModelCache) -> None:
        self.store = store
        self.cache = cache
        self._download_bytes: dict[tuple[str, str], int] = {}

    def inspect(self, model_id: ModelId, constraints: ModelConstraints) -> None:
        """Size, file types and parameter count from listings and headers: nothing downloaded."""
        info = self.store.revision_info(model_id.repo_id, model_id.commit)
        meta = self.store.safetensors_metadata(model_id.repo_id, model_id.commit)
        check_revision(info, meta, constraints)
        self._download_bytes[(model_id.repo_id, model_id.commit)] = info.download_bytes

    def fetch(self, hotkey: str, model_id: ModelId) -> str:
        expected = self._download_bytes.pop((model_id.repo_id, model_id.commit), None)
        path = self.cache.fetch(self.store, hotkey, model_id.repo_id, model_id.commit, expected_bytes=expected)
        return str(path)

    def verify(self, model_dir: str, hotkey: str, model_id: ModelId, constraints: ModelConstraints) -> str:
        """Hashes bind the files to the committing hotkey; then config, headers and norms."""
        digest = verify_hashes(model_dir, hotkey, model_id.secure_hash)
        check_model_dir(model_dir, constraints)
        return digest

    def mark_used(self, hotkey: str, revision: str) -> None:
        """Restart the model's cleanup grace period: it is about to be evaluated."""
        self.cache.touch(hotkey, revision)
