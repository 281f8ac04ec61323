"""Check one miner's commitment and bring its model onto disk, or say exactly why not.

The order follows SPEC §8: cheap checks first, nothing downloaded until the revision's size,
files and parameter count are known to be acceptable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from finetune.chain import MetagraphSnapshot, ModelId, NeuronInfo, decode_commitment
from finetune.competition import Schedule
from finetune.errors import DiskFull, FinetuneError, ModelRejected, RepoNotFound, StorageError
from finetune.protocol import ScoringProtocol
from finetune.storage.files import read_small_json
from finetune.submission import check_submission
from finetune.text import printable
from finetune.validator.state import TrackedModel

logger = logging.getLogger(__name__)

# Reasons that may clear up on their own: the uid is checked again at its next turn.
TRANSIENT_REASONS = frozenset(
    {"eval_delay", "repo_not_found", "disk_low", "storage", "download_failed", "download_timeout",
     "incomplete_download", "chain", "check_failed", "aborted"}
)


class ModelFetcher(Protocol):
    """What the updater needs of storage: look before downloading, then download and check."""

    def inspect(self, model_id: ModelId, constraints, protocol: ScoringProtocol) -> None: ...

    def fetch(self, hotkey: str, model_id: ModelId) -> str: ...

    def read_manifest(self, model_id: ModelId) -> bytes | None: ...

    def verify(self, model_dir: str, hotkey: str, model_id: ModelId, constraints, protocol: ScoringProtocol,
               should_abort: Callable[[], bool] | None = None) -> str: ...

    def mark_used(self, hotkey: str, revision: str) -> None: ...

    def using(self, hotkey: str, revision: str) -> AbstractContextManager[None]: ...


@dataclass(frozen=True)
class UpdateResult:
    hotkey: str
    model: TrackedModel
    changed: bool  # a new model is ready to be evaluated


def needs_check(previous: TrackedModel | None, neuron: NeuronInfo, *, now: float, interval_s: float) -> bool:
    """A uid is (re)checked when its commitment changed, or a transient failure is due a retry."""
    if neuron.commitment is None:
        return previous is not None
    waiting = previous is not None and previous.waiting_commitment
    if waiting and previous.waiting_commitment == neuron.commitment and previous.uid == neuron.uid:
        return now - previous.checked_at >= interval_s  # its eval delay is checked again in time
    if previous is None or previous.commitment != neuron.commitment or previous.uid != neuron.uid:
        return True
    if previous.status == "ready":
        return False
    if previous.status == "rejected" and previous.reason not in TRANSIENT_REASONS:
        return False  # the same bad commitment stays bad
    return now - previous.checked_at >= interval_s


def _tracked(neuron: NeuronInfo, **fields) -> TrackedModel:
    for key in ("reason", "detail"):  # miner-made text: escaped and bounded before it is kept
        if key in fields:
            fields[key] = printable(fields[key], 40 if key == "reason" else 300)
    return TrackedModel(
        hotkey=neuron.hotkey,
        uid=neuron.uid,
        commitment=neuron.commitment or "",
        block=neuron.commitment_block or 0,
        checked_at=time.time(),
        **fields,
    )


def check_neuron(
    neuron: NeuronInfo,
    *,
    schedule: Schedule,
    block_now: int,
    fetcher: ModelFetcher,
    should_abort: Callable[[], bool] | None = None,
) -> TrackedModel:
    """Decode, gate and fetch one neuron's model. Never raises for anything the miner did.

    Returns:
        A `TrackedModel` whose status is ``ready`` (checked, on disk), ``pending`` (waiting
        for the eval delay) or ``rejected`` with a reason code and a detail.
    """
    protocol = schedule.protocol_at(block_now)
    decoded = decode_commitment(neuron.commitment, rules=protocol.checks)
    if not isinstance(decoded, ModelId):
        return _tracked(neuron, status="rejected", reason="invalid_commitment", detail=decoded.reason)
    model_id = decoded
    base = dict(repo_id=model_id.repo_id, revision=model_id.commit, competition_id=model_id.competition_id)
    submitted = neuron.commitment_block or 0
    competition = schedule.competition_at(model_id.competition_id, submitted)
    current = schedule.competition_at(model_id.competition_id, block_now)
    if competition is None or current is None:
        return _tracked(neuron, status="rejected", reason="unknown_competition",
                        detail=f"competition {model_id.competition_id} not active at block "
                               f"{submitted if competition is None else block_now}", **base)
    constraints = current.constraints
    if block_now - submitted < constraints.eval_block_delay:
        wait = constraints.eval_block_delay - (block_now - submitted)
        return _tracked(neuron, status="pending", reason="eval_delay",
                        detail=f"eligible in {wait} blocks", **base)
    try:
        fetcher.inspect(model_id, constraints, protocol)
        model_dir = fetcher.fetch(neuron.hotkey, model_id)
        content_hash = fetcher.verify(model_dir, neuron.hotkey, model_id, constraints, protocol,
                                      should_abort=should_abort)
        submission = _submission(fetcher, model_id, model_dir, constraints)
    except ModelRejected as exc:
        return _tracked(neuron, status="rejected", reason=exc.reason, detail=str(exc), **base)
    except RepoNotFound as exc:
        return _tracked(neuron, status="rejected", reason="repo_not_found", detail=str(exc), **base)
    except DiskFull as exc:  # the validator's disk, not the miner's model: it waits, it is not rejected
        return _tracked(neuron, status="pending", reason="disk_low", detail=str(exc), **base)
    except (StorageError, OSError) as exc:
        # A download cut off by its deadline or short of its listed bytes keeps its own reason
        # (both retried); a listing the bytes break is a ModelRejected above, never retried.
        reason = getattr(exc, "reason", None)
        if reason not in ("download_timeout", "incomplete_download"):
            reason = "download_failed"
        return _tracked(neuron, status="rejected", reason=reason, detail=str(exc)[:300], **base)
    except FinetuneError as exc:
        return _tracked(neuron, status="rejected", reason=exc.reason, detail=str(exc)[:300], **base)
    except Exception as exc:  # noqa: BLE001 - the per-miner boundary: record it, check the next uid
        logger.exception("unexpected error checking uid %d", neuron.uid)
        return _tracked(neuron, status="rejected", reason="check_failed",
                        detail=f"{type(exc).__name__}: {exc}"[:300], **base)
    return _tracked(neuron, status="ready", local_path=model_dir, content_hash=content_hash,
                    submission=submission, **base)


def _submission(fetcher: ModelFetcher, model_id: ModelId, model_dir: str, constraints) -> dict[str, str | float]:
    """The seeds' competitions: the revision's `submission.json`, checked against the rules
    (`finetune.submission`); {} where the competition asks for none. Raises ModelRejected."""
    if constraints.submission is None:
        return {}
    config = read_small_json(Path(model_dir) / "config.json")
    return check_submission(fetcher.read_manifest(model_id), constraints, config if isinstance(config, dict) else {})


def high_stake_picks(
    metagraph: MetagraphSnapshot,
    validator_weights: dict[int, dict[int, float]],
    *,
    min_stake: float,
    min_weight: float,
) -> set[str]:
    """Hotkeys that validators with a permit and at least `min_stake` weight at `min_weight`
    or more of their total (the reference's rule).

    Another validator's opinion never changes a score here; it only makes sure such models
    are evaluated again, so a model this validator dropped early gets a second look (SPEC §8).
    """
    by_uid = {n.uid: n for n in metagraph.neurons}
    picks: set[str] = set()
    for validator_uid, weights in validator_weights.items():
        validator = by_uid.get(validator_uid)
        if validator is None or validator.stake < min_stake or not validator.validator_permit:
            continue
        total = sum(w for w in weights.values() if w > 0)
        for uid, weight in weights.items():
            if total > 0 and weight / total >= min_weight and uid in by_uid:
                picks.add(by_uid[uid].hotkey)
    return picks


def update_models(
    models: dict[str, TrackedModel],
    metagraph: MetagraphSnapshot,
    *,
    schedule: Schedule,
    fetcher: ModelFetcher,
    interval_s: float,
    now: float | None = None,
    limit: int | None = None,
    start_uid: int = 0,
    should_abort: Callable[[], bool] | None = None,
) -> list[UpdateResult]:
    """Check, round-robin from `start_uid`, the uids due a check; at most `limit` of them.

    `models` is not modified: the caller (the one loop owning state) applies the results.
    """
    now = time.time() if now is None else now
    neurons = sorted(metagraph.neurons, key=lambda n: ((n.uid - start_uid) % max(len(metagraph.neurons), 1)))
    results: list[UpdateResult] = []
    for neuron in neurons:
        if limit is not None and len(results) >= limit:
            break
        previous = models.get(neuron.hotkey)
        if neuron.commitment is None or not needs_check(previous, neuron, now=now, interval_s=interval_s):
            continue
        if should_abort is not None and should_abort():
            break
        checked = check_neuron(neuron, schedule=schedule, block_now=metagraph.block, fetcher=fetcher,
                               should_abort=should_abort)
        if checked.status == "pending" and previous is not None and previous.status == "ready" \
                and previous.uid == neuron.uid:
            # A new commitment waiting for its eval delay does not take the old model out of
            # the competition (as in the reference, whose tracker keeps the old one until then).
            checked = previous.model_copy(update={
                "waiting_commitment": checked.commitment, "waiting_detail": checked.detail,
                "checked_at": checked.checked_at})
        changed = checked.status == "ready" and (
            previous is None or previous.status != "ready" or previous.revision != checked.revision
            or previous.content_hash != checked.content_hash
        )
        if checked.status == "rejected":
            logger.info("uid %d (%s) rejected: %s %s", neuron.uid, neuron.hotkey[:8], checked.reason, checked.detail)
        results.append(UpdateResult(neuron.hotkey, checked, changed))
    return results
