"""The validator's side of storage: look at a revision, download it to the cache, verify it.

Looking (listings and headers, size-capped) and downloading (streamed, size-bounded, under a
deadline) happen in the validator process. Verifying parses and hashes every file a miner
wrote, so it runs in a child process with a memory limit and a deadline
(`finetune.validator.isolation`); a durable marker records each attempt, so a check that takes
the whole validator down is not simply run again at every restart.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import constants
from finetune.chain import ModelId
from finetune.competition import ModelConstraints
from finetune.errors import FinetuneError, ModelRejected
from finetune.protocol import NEXT, CheckRules, HashRules, ScoringProtocol
from finetune.storage import (
    ModelCache,
    ModelStore,
    check_loadable,
    check_model_dir,
    check_revision,
    verify_hashes,
)
from finetune.storage.files import MANIFEST_FILE, MAX_MANIFEST_BYTES
from finetune.validator.isolation import is_memory_error, run_in_child

logger = logging.getLogger(__name__)

# How a check child's ending becomes a rejection: these repeat on the same files.
_CHILD_REASONS = {"out_of_memory": "check_out_of_memory", "timeout": "check_timeout", "crashed": "check_crashed"}


def verify_model_dir(model_dir: str, hotkey: str, secure_hash: str, constraints: ModelConstraints,
                     reject_unused: bool | None = None, *, checks: CheckRules = NEXT.checks,
                     hashing: HashRules = NEXT.hashing) -> str:
    """The post-download checks, as the check child runs them. Returns the content hash.

    Under the reference file set the model must load first (`check_loadable`): the reference
    hashes the files its load fetched, so a model it cannot load is rejected for that,
    whatever its hash. Then the hash over the protocol's file set, then the other checks.

    Args:
        model_dir: the downloaded model.
        hotkey: the committing hotkey.
        secure_hash: the committed secure hash.
        constraints: the competition's model constraints.
        reject_unused: overrides `checks.reject_unused_weights` when given.
        checks: the protocol's check rules.
        hashing: the protocol's hash rules.

    Raises:
        ModelRejected: the files break a rule (its reason says which).
        FinetuneError: reason `check_failed`, a failure of the check itself (not the miner's).
    """
    try:
        if hashing.file_set == "reference":
            check_loadable(model_dir, checks=checks)
        digest = verify_hashes(model_dir, hotkey, secure_hash, hashing=hashing)
        check_model_dir(model_dir, constraints, reject_unused=reject_unused, checks=checks)
    except (ModelRejected, MemoryError):
        raise
    except SystemError as exc:  # C code that failed to allocate under the limit reports it so
        raise MemoryError(f"the check ran out of memory ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - our own check broke: say so, do not blame the miner
        if is_memory_error(exc):
            raise MemoryError(str(exc)) from None
        raise FinetuneError(f"the check itself failed: {type(exc).__name__}: {exc}", reason="check_failed") from None
    return digest


class StoreFetcher:
    """Implements the updater's `ModelFetcher` with a model store and the disk cache.

    Args:
        store: where models are downloaded from.
        cache: where they are kept.
        check_deadline_s: wall-clock limit of one model's post-download checks.
        check_memory_bytes: memory the check child may allocate.

    Every check follows the protocol in force, passed with each call.
    """

    def __init__(
        self,
        store: ModelStore,
        cache: ModelCache,
        *,
        check_deadline_s: float = constants.CHECK_DEADLINE_S,
        check_memory_bytes: int = constants.CHECK_MEMORY_BYTES,
    ) -> None:
        self.store = store
        self.cache = cache
        self.check_deadline_s = check_deadline_s
        self.check_memory_bytes = check_memory_bytes
        self._download_bytes: dict[tuple[str, str], int] = {}

    def inspect(self, model_id: ModelId, constraints: ModelConstraints, protocol: ScoringProtocol = NEXT) -> None:
        """Size, file types and parameter count from listings and headers: nothing downloaded."""
        info = self.store.revision_info(model_id.repo_id, model_id.commit)
        check_revision(info, None, constraints, checks=protocol.checks)  # sizes, names before any header
        meta = self.store.safetensors_metadata(model_id.repo_id, model_id.commit)
        check_revision(info, meta, constraints, checks=protocol.checks)
        self._download_bytes[(model_id.repo_id, model_id.commit)] = info.download_bytes

    def fetch(self, hotkey: str, model_id: ModelId) -> str:
        expected = self._download_bytes.pop((model_id.repo_id, model_id.commit), None)
        path = self.cache.fetch(self.store, hotkey, model_id.repo_id, model_id.commit, expected_bytes=expected)
        return str(path)

    def read_manifest(self, model_id: ModelId) -> bytes | None:
        """The revision's submission manifest (size-capped), None when it has none."""
        return self.store.read_file(model_id.repo_id, model_id.commit, MANIFEST_FILE, max_bytes=MAX_MANIFEST_BYTES)

    def verify(self, model_dir: str, hotkey: str, model_id: ModelId, constraints: ModelConstraints,
               protocol: ScoringProtocol = NEXT, should_abort: Callable[[], bool] | None = None) -> str:
        """Hashes bind the files to the committing hotkey; then config, headers and norms.

        Raises:
            ModelRejected: a rule is broken, or the check ran out of memory or time or
                crashed (`check_out_of_memory`, `check_timeout`, `check_crashed`).
            FinetuneError: reason `check_failed` or `aborted` (retried later).
        """
        revision = model_id.commit
        interrupted = self.cache.check_attempts(hotkey, revision)
        if interrupted >= constants.MAX_INTERRUPTED_CHECKS:
            raise ModelRejected(
                f"the check of this revision stopped the validator {interrupted} times",
                reason="check_crashed",
            )
        if interrupted:
            logger.warning("the last check of %s@%s never finished; checking again", model_id.repo_id, revision[:8])
        self.cache.begin_check(hotkey, revision)
        outcome = run_in_child(
            functools.partial(verify_model_dir, checks=protocol.checks, hashing=protocol.hashing),
            (model_dir, hotkey, model_id.secure_hash, constraints),
            deadline_s=self.check_deadline_s,
            memory_bytes=self.check_memory_bytes,
            should_abort=should_abort,
        )
        self.cache.end_check(hotkey, revision)  # reached only if this process survived the check
        if outcome.status == "ok":
            return outcome.value
        if outcome.status == "aborted":
            raise FinetuneError("check interrupted by shutdown", reason="aborted")
        if outcome.status == "error" and outcome.reason == "check_failed":
            raise FinetuneError(outcome.detail, reason="check_failed")
        reason = _CHILD_REASONS.get(outcome.status, outcome.reason)
        raise ModelRejected(outcome.detail or reason, reason=reason)

    def mark_used(self, hotkey: str, revision: str) -> None:
        """Restart the model's cleanup grace period: it is about to be evaluated."""
        self.cache.touch(hotkey, revision)

    def using(self, hotkey: str, revision: str):
        """Context: a round is scoring this model; it is not deleted meanwhile."""
        return self.cache.using(hotkey, revision)
