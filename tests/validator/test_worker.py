import math
import time

import pytest

from finetune.validator.worker import run_isolated
from tests.validator import jobs


def test_result_comes_back():
    outcome = run_isolated("/m", "comp", {"x": 1}, deadline_s=60, options={"device": "cpu"}, job=jobs.ok_job)
    assert outcome.ok and outcome.total == 0.25
    assert outcome.tasks["t"]["raw"] == 0.5


@pytest.mark.parametrize(
    ("job", "reason"),
    [(jobs.nan_job, "nan"), (jobs.crash_job, "crashed"), (jobs.oom_job, "out_of_memory"),
     (jobs.rejected_job, "unsafe_files"), (jobs.negative_job, "negative_score")],
)
def test_failures_become_infinite_scores(job, reason):
    outcome = run_isolated("/m", None, None, deadline_s=60, job=job)
    assert not outcome.ok
    assert math.isinf(outcome.total)
    assert outcome.reason == reason


def test_deadline_really_interrupts():
    started = time.monotonic()
    outcome = run_isolated("/m", None, None, deadline_s=1.5, job=jobs.hang_job)
    assert outcome.reason == "timeout" and math.isinf(outcome.total)
    assert time.monotonic() - started < 15


def test_abort_kills_the_child():
    outcome = run_isolated("/m", None, None, deadline_s=60, job=jobs.hang_job, should_abort=lambda: True)
    assert outcome.reason == "aborted"


def test_a_worker_that_cannot_start_is_the_validators_failure_not_the_models(monkeypatch):
    import multiprocessing as mp

    from finetune.validator import isolation

    class NoForkProcess:
        def __init__(self, *args, **kwargs):
            self.exitcode = None

        def start(self):
            raise OSError(12, "Cannot allocate memory")

        def is_alive(self):
            return False

        def join(self, timeout=None):
            pass

    class Context:
        Pipe = staticmethod(mp.Pipe)
        Process = NoForkProcess

    monkeypatch.setattr(isolation, "_context", lambda: Context())
    outcome = run_isolated("/m", None, None, deadline_s=60, job=jobs.ok_job)
    assert not outcome.ok and math.isinf(outcome.total)
    assert outcome.reason == "worker_unavailable" and "Cannot allocate memory" in outcome.detail


def test_host_memory_exhaustion_is_out_of_memory_for_that_model_only():
    # A chat template's `'x' * 6e9`, shrunk: 3 GiB asked of a child allowed 512 MiB.
    outcome = run_isolated("/m", None, 3 << 30, deadline_s=60, job=jobs.memory_bomb_job, memory_bytes=512 << 20)
    assert not outcome.ok and outcome.reason == "out_of_memory"
    assert outcome.peak_rss_bytes < (512 << 20) + (1 << 30)  # the allocation failed, it was never made


def test_a_child_that_outgrows_its_budget_slowly_is_stopped_by_the_resident_watch():
    # Memory RLIMIT_DATA does not count (a shared mapping) is still watched by the parent.
    outcome = run_isolated("/m", None, 3 << 30, deadline_s=60, job=jobs.shared_memory_job, memory_bytes=256 << 20)
    assert outcome.reason == "out_of_memory"
    assert "resident size" in outcome.detail


def test_the_limit_leaves_a_normal_job_alone():
    outcome = run_isolated("/m", "comp", {"x": 1}, deadline_s=60, job=jobs.ok_job, memory_bytes=256 << 20)
    assert outcome.ok and outcome.peak_rss_bytes > 0
