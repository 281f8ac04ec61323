"""Every error the library raises on purpose. A leaf module: it imports nothing internal.

Each error subclasses `FinetuneError` and the builtin it resembles, and carries the facts a
caller needs to record it against a miner (`reason` is a short stable code).
"""

from __future__ import annotations


class FinetuneError(Exception):
    """Base of all errors raised on purpose by this project."""

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None, **facts: object) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.facts = facts


class ConfigError(FinetuneError, ValueError):
    """Bad settings or an unknown id (competition, task, backend)."""

    reason = "config"


class UnknownIdError(ConfigError, KeyError):
    """An id that is not registered; the message lists the known ones."""

    reason = "unknown_id"

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else ""


class InvalidCommitment(FinetuneError, ValueError):
    """Chain commitment text that is not a valid model id."""

    reason = "invalid_commitment"


class DataUnavailable(FinetuneError, RuntimeError):
    """A task's data could not be loaded (network, file, too few samples)."""

    reason = "data_unavailable"


class ModelRejected(FinetuneError, ValueError):
    """A model fails a check; `reason` names which (e.g. `too_large`, `bad_architecture`)."""

    reason = "rejected"


class StorageError(FinetuneError, OSError):
    """A model store or the disk cache failed."""

    reason = "storage"


class RepoNotFound(StorageError):
    reason = "repo_not_found"


class DiskFull(StorageError):
    """Free disk is below the low watermark; no new download is started."""

    reason = "disk_low"


class ChainError(FinetuneError, RuntimeError):
    """A chain call failed."""

    reason = "chain"


class ChainUnreachable(ChainError, ConnectionError):
    reason = "chain_unreachable"


class ChainTimeout(ChainError, TimeoutError):
    reason = "chain_timeout"


class ChainBusy(ChainTimeout):
    """A call refused at once: an earlier call on the same client is still outstanding."""

    reason = "chain_busy"


class NotRegistered(ChainError):
    reason = "not_registered"


class RateLimited(ChainError):
    """Rate or space limit hit; `retry_after_blocks` says when to try again if known."""

    reason = "rate_limited"

    def __init__(self, message: str, *, retry_after_blocks: int | None = None, **facts: object):
        super().__init__(message, **facts)
        self.retry_after_blocks = retry_after_blocks


class SpaceLimitExceeded(RateLimited):
    reason = "space_limit"


class EvalFailed(FinetuneError, RuntimeError):
    """Scoring a model failed (crash, NaN, out of memory, deadline)."""

    reason = "eval_failed"
