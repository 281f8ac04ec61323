"""A validator in its own process, for the kill and signal tests; and its stand-in evaluator.

    python -m tests.validator.fault_runner TMP once|daemon --sleep S [--slow HOTKEY ...] --log FILE

TMP holds what `tests.validator.helpers.make_subnet` created (``devnet.sqlite``, ``hub/``);
the validator keeps its state and cache there too, exactly as `make_validator` lays them
out, so a test can restart it in-process on the same files. ``once`` runs `run_once`;
``daemon`` runs `run` with the SIGTERM/SIGINT handlers of `neurons/validator.py` and exits
with its return code.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from finetune.validator.worker import WorkerOutcome

DEFAULT_SCORE = 3.0


def hotkey_of(model_dir: str | Path) -> str:
    """The cache lays models out as ``root/<hotkey>/<revision>``."""
    return Path(model_dir).parent.name


def stand_in_evaluate(
    scores: Mapping[str, float],
    *,
    sleep_s: float = 0.0,
    slow: Collection[str] | None = None,
    log: Path | None = None,
) -> Callable[..., WorkerOutcome]:
    """An evaluator with the signature of `run_isolated` that scores by hotkey.

    Args:
        scores: hotkey -> total (inf means the evaluation failed with reason ``crashed``).
        sleep_s: time an evaluation takes; it gives up early when a shutdown is asked.
        slow: the hotkeys whose evaluation takes `sleep_s` (None: all); the others are instant.
        log: a file that gets ``<hotkey> start`` / ``done`` / ``aborted`` lines, so a test
            in another process can tell where the validator is.
    """
    calls: list[str] = []

    def note(line: str) -> None:
        if log is not None:
            with log.open("a") as handle:
                handle.write(line + "\n")

    def evaluate(model_dir, competition, task_data, *, deadline_s, options, should_abort, memory_bytes=None):
        if should_abort():  # as `run_isolated`: nothing new starts during a shutdown
            return WorkerOutcome(False, math.inf, reason="aborted", detail="shutdown requested")
        hotkey = hotkey_of(model_dir)
        calls.append(hotkey)
        note(f"{hotkey} start")
        until = time.monotonic() + (sleep_s if slow is None or hotkey in slow else 0.0)
        while time.monotonic() < until:
            if should_abort():
                note(f"{hotkey} aborted")
                return WorkerOutcome(False, math.inf, reason="aborted", detail="shutdown requested")
            time.sleep(0.02)
        note(f"{hotkey} done")
        total = scores.get(hotkey, DEFAULT_SCORE)
        if not math.isfinite(total):
            return WorkerOutcome(False, math.inf, reason="crashed", detail="stand-in failure")
        tasks = {t.name: {"raw": total, "normalized": total, "weighted": total * t.weight, "samples": 2}
                 for t in competition.tasks}
        return WorkerOutcome(True, total, tasks)

    evaluate.calls = calls  # type: ignore[attr-defined]
    return evaluate


SCORES = {"alpha": 1.0, "beta": 2.0}  # what the kill/signal tests expect: alpha wins


def build(tmp: Path, *, sleep_s: float = 0.0, slow: Collection[str] | None = None, log: Path | None = None):
    """The validator `make_validator` would build on `tmp`, with the stand-in evaluator."""
    import competitions
    from finetune.chain import DevnetChain
    from finetune.storage import DirModelStore
    from tests.validator.helpers import make_validator

    chain = DevnetChain(tmp / "devnet.sqlite", create=False)
    store = DirModelStore(tmp / "hub")
    evaluate = stand_in_evaluate(SCORES, sleep_s=sleep_s, slow=slow, log=log)
    validator = make_validator(tmp, chain, store, competitions.LOCAL_SCHEDULE, evaluate=evaluate)
    validator.fetcher.cache.grace_period_s = 3600  # no cleanup race with the daemon's downloads
    return validator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tmp", type=Path)
    parser.add_argument("mode", choices=["once", "daemon"])
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--slow", nargs="*", default=None)
    parser.add_argument("--log", type=Path, default=None)
    args = parser.parse_args(argv)
    validator = build(args.tmp, sleep_s=args.sleep, slow=args.slow, log=args.log)
    if args.mode == "once":
        validator.run_once()
        return 0
    from finetune.validator.build import install_signal_handlers

    install_signal_handlers(validator)
    return validator.run()


if __name__ == "__main__":
    raise SystemExit(main())
