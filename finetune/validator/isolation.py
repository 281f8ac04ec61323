"""Run a job on a miner's files in a child process, under a deadline and a memory limit.

Miner files are hostile input: a chat template can ask for `'x' * 6e9`, a config can declare
ten million layers, a safetensors header can hold a million tensors. Whatever runs over them
(the post-download checks, the scoring) runs in a child process:

- **deadline**: the child is killed when it passes `deadline_s` (wall clock);
- **memory**: in the child, `RLIMIT_DATA` caps private writable memory at what the child
  already uses plus `memory_bytes`, so an allocation beyond it fails at once (`MemoryError`,
  or torch's "can't allocate memory") and comes back as ``out_of_memory``. `RLIMIT_DATA`
  rather than `RLIMIT_AS`: CUDA reserves huge ranges of address space that hold no memory,
  and those are not counted as data. As a second line, the parent samples the child's
  resident size and kills it above the same budget (memory the limit does not see).

The parent never raises for anything the child does: every ending is a `ChildOutcome`.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from finetune.text import printable

logger = logging.getLogger(__name__)

# The fork server imports these once, so each child starts in well under a second.
PRELOAD = ["finetune.validator._preload"]
_POLL_S = 0.1  # how often the parent looks at the child (deadline, abort, resident size)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# Allocation failures, as Python, torch's CPU allocator and CUDA word them.
_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "bad_alloc")
# The resident-size watch allows what the child already holds when it starts (the fork
# server's preloaded torch and transformers, ~0.5 GiB) on top of the budget: RLIMIT_DATA
# counts from that baseline too.
_BASELINE_SLACK = 1 << 30
# A child that has answered is left this long to exit by itself before it is killed. Its exit
# handlers unlink the named semaphores it created (tqdm makes one for its bars, under the fork
# server's start method); killed at once, it leaks them, and the resource tracker warns about
# them when the validator exits.
_EXIT_GRACE_S = 5.0


@dataclass(frozen=True)
class ChildOutcome:
    """How a child ended.

    Attributes:
        status: ``ok`` (value holds the job's return), ``error`` (the job raised: reason and
            detail say what), ``timeout``, ``out_of_memory``, ``crashed`` (died without an
            answer: signal, abort() in native code), ``aborted`` (shutdown requested) or
            ``unavailable`` (no child could be started: this machine's problem, not the job's).
        value: the job's return value when ``ok``.
        reason: for ``error``, the exception's `reason` attribute or its class name.
        detail: one escaped, bounded line for the record.
        elapsed_s: wall time from start to end.
        peak_rss_bytes: the largest resident size the parent saw (0 if it could not look).
    """

    status: str
    value: Any = None
    reason: str = ""
    detail: str = ""
    elapsed_s: float = 0.0
    peak_rss_bytes: int = 0


def is_memory_error(error: BaseException) -> bool:
    """An allocation failure, whatever library raised it."""
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower() if isinstance(error, RuntimeError) else ""
    return any(marker in text for marker in _OOM_MARKERS)


def _context() -> mp.context.BaseContext:
    if sys.platform.startswith("linux"):
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return mp.get_context("spawn")


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _limit_memory(budget: int | None) -> None:
    """In the child: cap private writable memory at its current size plus `budget` bytes."""
    if not budget:
        return
    try:
        import resource
    except ImportError:  # not on this platform: the parent's resident-size watch remains
        return
    base_kib = _status_kib("VmData") or 0
    limit = base_kib * 1024 + budget
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (ValueError, OSError) as exc:
        logger.warning("could not limit the child's memory (%s); the resident-size watch remains", exc)


def _peak_rss() -> int:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    except (ImportError, OSError):
        return 0


def _child_main(conn, job: Callable[..., Any], args: tuple, budget: int | None) -> None:
    """Runs in the child: apply the limit, do the job, send back the value or the error."""
    try:
        _limit_memory(budget)
        value = job(*args)
        conn.send(("ok", value, _peak_rss()))
    except BaseException as exc:  # noqa: BLE001 - the boundary: everything must come back as data
        head = printable(exc, 4000).replace("\\x0d", "\\x0a")  # a chat template may pick this text
        detail = printable(head.split("\\x0a", 1)[0], 500) if head else type(exc).__name__
        kind = "out_of_memory" if is_memory_error(exc) else "error"
        reason = getattr(exc, "reason", type(exc).__name__)
        try:
            conn.send((kind, {"reason": printable(reason, 40), "detail": detail}, _peak_rss()))
        except BaseException:  # noqa: BLE001 - no memory left even to answer: exit, parent sees EOF
            pass
    finally:
        conn.close()


def _resident_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def run_in_child(
    job: Callable[..., Any],
    args: tuple,
    *,
    deadline_s: float,
    memory_bytes: int | None = None,
    should_abort: Callable[[], bool] | None = None,
) -> ChildOutcome:
    """Run `job(*args)` in a fresh child process and wait for it within the limits.

    Args:
        job: a module-level function (the child imports it by name).
        args: picklable arguments.
        deadline_s: wall-clock limit; the child is killed at it.
        memory_bytes: memory the child may allocate beyond what it starts with (None: no cap).
        should_abort: polled while waiting; True kills the child (shutdown requested).

    Returns:
        A `ChildOutcome`; never raises for anything the child does.
    """
    if should_abort is not None and should_abort():  # shutting down: start nothing new
        return ChildOutcome("aborted", detail="shutdown requested")
    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child_main, args=(sender, job, args, memory_bytes), daemon=True)
    started = time.monotonic()
    try:
        process.start()
    except OSError as exc:  # no memory or file handles left for a fork
        sender.close()
        receiver.close()
        return ChildOutcome("unavailable", detail=printable(f"child did not start: {exc}"))
    sender.close()  # the child holds the only writer now, so a dead child means EOF here
    peak = 0
    message = None
    ending: ChildOutcome | None = None
    try:
        while True:
            elapsed = time.monotonic() - started
            if receiver.poll(min(_POLL_S, max(deadline_s - elapsed, 0.0))):
                try:
                    message = receiver.recv()
                except (EOFError, OSError):
                    message = None
                break
            peak = max(peak, _resident_bytes(process.pid))
            elapsed = time.monotonic() - started
            if memory_bytes and peak > memory_bytes + _BASELINE_SLACK:
                ending = ChildOutcome("out_of_memory", detail=f"resident size {peak / 2**20:.0f} MiB over "
                                      f"the {memory_bytes / 2**20:.0f} MiB budget", elapsed_s=elapsed,
                                      peak_rss_bytes=peak)
                break
            if elapsed >= deadline_s:
                ending = ChildOutcome("timeout", detail=f"exceeded {deadline_s:.0f}s", elapsed_s=elapsed,
                                      peak_rss_bytes=peak)
                break
            if should_abort is not None and should_abort():
                ending = ChildOutcome("aborted", detail="shutdown requested", elapsed_s=elapsed, peak_rss_bytes=peak)
                break
            if not process.is_alive() and not receiver.poll(0):
                break
    finally:
        if message is not None:
            process.join(timeout=_EXIT_GRACE_S)
        if process.is_alive():
            process.kill()
        process.join(timeout=10)
        receiver.close()
    if ending is not None:
        return ending
    elapsed = time.monotonic() - started
    if message is None:
        code = process.exitcode
        return ChildOutcome("crashed", detail=f"child exit code {code}", elapsed_s=elapsed, peak_rss_bytes=peak)
    kind, payload, child_peak = message
    peak = max(peak, child_peak)
    if kind == "ok":
        return ChildOutcome("ok", value=payload, elapsed_s=elapsed, peak_rss_bytes=peak)
    return ChildOutcome(kind, reason=payload["reason"], detail=payload["detail"], elapsed_s=elapsed,
                        peak_rss_bytes=peak)


def total_memory_bytes() -> int:
    """Physical memory of this machine (0 if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def default_worker_memory_bytes() -> int:
    """Budget of a scoring child when the operator sets none: 3/4 of physical memory, at
    least 8 GiB (an 8B model in bf16 passes through host memory while it loads)."""
    total = total_memory_bytes()
    return max(8 << 30, total * 3 // 4) if total else 8 << 30


__all__ = [
    "PRELOAD",
    "ChildOutcome",
    "default_worker_memory_bytes",
    "is_memory_error",
    "run_in_child",
    "total_memory_bytes",
]
