"""The validator's background threads. Each one loops until the stop event is set, and a
failure in one step is logged and retried at the next, never fatal."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from finetune.errors import FinetuneError

if TYPE_CHECKING:
    from finetune.validator.loop import Validator

logger = logging.getLogger(__name__)


def _every(validator: Validator, name: str, interval_s: Callable[[], float], step: Callable[[], object]) -> threading.Thread:
    def loop() -> None:
        while not validator.stop_event.is_set():
            try:
                step()
            except (FinetuneError, OSError) as exc:
                logger.warning("%s step failed: %s", name, exc)
            except Exception:  # noqa: BLE001 - a thread boundary: log it, never die silently
                logger.exception("%s step failed unexpectedly; retrying at the next interval", name)
            validator.stop_event.wait(interval_s())

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread


def start_background_threads(validator: Validator) -> list[threading.Thread]:
    config = validator.config
    def sync() -> None:
        validator.sync_metagraph()
        validator.scan_high_stake_weights()

    threads = [_every(validator, "metagraph-sync", lambda: config.metagraph_sync_s, sync)]

    cursor = {"uid": 0}

    def update() -> None:
        validator.update_step(limit=config.updates_per_step, start_uid=cursor["uid"])
        cursor["uid"] += config.updates_per_step

    threads.append(_every(validator, "model-updater", lambda: 5.0, update))

    last = {"ok": False}

    def weights() -> None:
        last["ok"] = validator.set_weights_once()

    threads.append(_every(validator, "weight-setter",
                          lambda: config.weights_s if last["ok"] else config.weights_retry_s, weights))
    if validator.cleanup is not None:
        def cleanup() -> None:
            validator.cleanup(validator.referenced_models())

        threads.append(_every(validator, "disk-cleanup", lambda: config.cleanup_s, cleanup))
    logger.info("started threads: %s", ", ".join(t.name for t in threads))
    time.sleep(0)  # let them start
    return threads
