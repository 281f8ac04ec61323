"""Deadlines for blocking chain calls, run on one worker thread per client.

A blocking call (an SDK read, an extrinsic submission) cannot be interrupted from outside, so
a deadline can only stop *waiting* for it. Starting a fresh thread per call and abandoning it
on timeout leaks a thread per call against a hung node (measured: 220 threads in 30 s from
four callers). Instead each client owns a `CallExecutor`:

- Its calls run one at a time on a single daemon worker thread. A caller that finds a call
  in progress waits for it, within its own deadline (the deadline covers waiting and running).
- A call whose caller gave up still occupies the worker: it is *outstanding*. While it is,
  every new call fails at once with `ChainTimeout` naming it, instead of queuing behind it or
  starting another thread. A call hung once means the node is hung; more would hang too.
- When the outstanding call returns (its result is discarded) the executor takes calls again.

So a client holds at most one thread, however long its node hangs. The worker exits after
``idle_s`` without work and starts again with the next call, so a client that is dropped
without `CallExecutor.close` does not keep a thread either.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from finetune.errors import ChainBusy, ChainTimeout

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Call:
    """One call handed to the worker; its fields are guarded by the executor's condition."""

    fn: Callable[[], Any]
    what: str
    handed_at: float = field(default_factory=time.monotonic)
    taken: bool = False  # the worker has started it
    finished: bool = False
    abandoned: bool = False  # its caller stopped waiting: the call is outstanding
    value: Any = None
    error: BaseException | None = None


class CallExecutor:
    """Runs one client's blocking calls one at a time, each under a deadline.

    Args:
        name: names the worker thread (``chain:NAME``) and the log lines.
        idle_s: the worker exits after this long without a call.
    """

    def __init__(self, name: str, *, idle_s: float = 30.0) -> None:
        self.name = name
        self.idle_s = idle_s
        self._cond = threading.Condition()
        self._current: _Call | None = None  # holds the worker, from hand-over to return
        self._worker: threading.Thread | None = None
        self._retire = False

    @property
    def outstanding(self) -> str | None:
        """The name of the call still running after its caller gave up, or None."""
        with self._cond:
            current = self._current
            return current.what if current is not None and current.abandoned else None

    def call(self, fn: Callable[[], T], *, timeout_s: float, what: str) -> T:
        """Run `fn` on the worker and wait at most `timeout_s` for it.

        Args:
            fn: the blocking call.
            timeout_s: the deadline in seconds, waiting for an earlier call included.
            what: names the call in errors and logs.

        Returns:
            What `fn` returned.

        Raises:
            ChainTimeout: `fn` did not finish in time (it stays outstanding until it
                returns), an earlier call did not leave the worker in time, or an earlier
                call is outstanding (then at once; ``facts["outstanding"]`` names it).
            BaseException: whatever `fn` raised, re-raised in the caller's thread.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._wait_for_worker(what, deadline, timeout_s)
            job = _Call(fn, what)
            self._current = job
            if self._worker is None:
                self._start_worker()
            self._cond.notify_all()
            try:
                finished = self._cond.wait_for(lambda: job.finished, _left(deadline))
            finally:  # timed out, or the caller was interrupted: nobody waits for it now
                if not job.finished:
                    job.abandoned = True
                    self._cond.notify_all()  # callers waiting for the worker now fail fast
            if not finished:
                raise ChainTimeout(
                    f"chain call {what} did not return within {timeout_s:g}s", call=what
                )
        if job.error is not None:
            raise job.error
        return job.value

    def close(self) -> None:
        """Let the worker exit once it is idle; a later call starts a new one."""
        with self._cond:
            if self._worker is not None:
                self._retire = True
                self._cond.notify_all()

    def _wait_for_worker(self, what: str, deadline: float, timeout_s: float) -> None:
        while (current := self._current) is not None:
            if current.abandoned:
                age = time.monotonic() - current.handed_at
                raise ChainBusy(
                    f"chain call {what} refused: the previous call {current.what} is still "
                    f"outstanding after {age:.1f}s (the node is not answering)",
                    call=what,
                    outstanding=current.what,
                )
            if not self._cond.wait(_left(deadline)) and time.monotonic() >= deadline:
                raise ChainTimeout(
                    f"chain call {what} did not start within {timeout_s:g}s: "
                    f"{current.what} was still running",
                    call=what,
                    waited_for=current.what,
                )

    def _start_worker(self) -> None:
        worker = threading.Thread(target=self._serve, name=f"chain:{self.name}", daemon=True)
        try:
            worker.start()
        except BaseException:  # no thread to run it: give the slot back
            self._current = None
            raise
        self._worker = worker

    def _has_work(self) -> bool:
        return self._retire or (self._current is not None and not self._current.taken)

    def _serve(self) -> None:
        while True:
            with self._cond:
                woken = self._cond.wait_for(self._has_work, self.idle_s)
                if not woken or self._current is None or self._current.taken:
                    self._worker, self._retire = None, False  # idle or retired: exit
                    return
                job = self._current
                job.taken = True
            try:
                value, error = job.fn(), None
            except BaseException as raised:  # handed to the caller, who decides
                value, error = None, raised
            with self._cond:
                job.value, job.error = value, error
                job.finished = True
                self._current = None
                self._cond.notify_all()
            if job.abandoned:
                logger.warning(
                    "chain call %s on %s returned %.1fs after it started, past its deadline; "
                    "taking calls again",
                    job.what, self.name, time.monotonic() - job.handed_at,
                )
            del job, value, error


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def call_with_deadline(
    fn: Callable[[], T], *, timeout_s: float, what: str, executor: CallExecutor
) -> T:
    """Run a blocking call on a client's executor and give up waiting after `timeout_s`.

    A call that never returns is not killed (it cannot be): it keeps the executor's one
    worker, and further calls fail fast until it returns. See `CallExecutor.call`.

    Args:
        fn: the blocking call.
        timeout_s: the deadline in seconds.
        what: names the call in the timeout message.
        executor: the calling client's executor.

    Returns:
        What `fn` returned.

    Raises:
        ChainTimeout: `fn` did not finish in time, or an earlier call is still outstanding.
        BaseException: whatever `fn` raised, re-raised in the caller's thread.
    """
    return executor.call(fn, timeout_s=timeout_s, what=what)
