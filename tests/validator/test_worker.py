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


def test_progress_log_says_when_each_task_starts_and_ends_and_rate_limits_the_rest(caplog):
    import logging

    from finetune.validator.worker import ProgressLog

    now = [0.0]
    log = ProgressLog("uid 3", every_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="finetune.validator.worker"):
        log("SYNTHETIC_1_SFT", 0, 120)
        for done, at in ((1, 1.0), (30, 9.0), (60, 41.0), (61, 45.0), (90, 52.0)):
            now[0] = at
            log("SYNTHETIC_1_SFT", done, 120)
        now[0] = 60.0
        log("CODEFORCES_COTS", 0, 100)  # the first task ends when the next one starts
        now[0] = 64.0
        log("CODEFORCES_COTS", 2, 100)  # a task that stops short (e.g. a failed gate)
        log.close()
    assert [r.getMessage() for r in caplog.records] == [
        "uid 3: SYNTHETIC_1_SFT started, 120 requests",
        "uid 3: SYNTHETIC_1_SFT 60/120 requests, 41 s",
        "uid 3: SYNTHETIC_1_SFT 90/120 requests, 52 s",
        "uid 3: SYNTHETIC_1_SFT done, 90/120 requests in 60 s",
        "uid 3: CODEFORCES_COTS started, 100 requests",
        "uid 3: CODEFORCES_COTS done, 2/100 requests in 4 s",
    ]


def test_progress_log_says_when_the_scoring_stopped_inside_a_task(caplog):
    import logging

    from finetune.validator.worker import ProgressLog

    log = ProgressLog("uid 3", clock=lambda: 0.0)
    with caplog.at_level(logging.INFO, logger="finetune.validator.worker"):
        log("FINEWEB", 0, 402)
        log.close("stopped")
        log.close()  # nothing left to close
    assert [r.getMessage() for r in caplog.records][-1] == "uid 3: FINEWEB stopped, 0/402 requests in 0 s"
    assert len(caplog.records) == 2


def test_a_failed_task_names_its_reason_in_the_models_failure():
    from finetune.validator.worker import _outcome_from_result

    result = {"total": math.inf, "tasks": {
        "REF": {"raw": math.inf, "normalized": math.inf, "failure": "non_finite_loss: the loss is NaN or inf on 2 of 4 samples"},
        "MC": {"raw": 0.5, "normalized": 0.5, "failure": ""}}}
    outcome = _outcome_from_result(result, 1.0, 0)
    assert not outcome.ok and outcome.reason == "non_finite"
    assert outcome.detail == "no finite score on REF (non_finite_loss: the loss is NaN or inf on 2 of 4 samples)"
    assert outcome.tasks["REF"]["failure"].startswith("non_finite_loss")


CHILD_RUN = """
import sys
import competitions
from finetune.datasets import DataConfig
from finetune.eval import prepare_task_data
from finetune.validator.worker import run_isolated

competition = competitions.LOCAL_INSTRUCT
data = prepare_task_data(competition, seed=0, config=DataConfig(offline=True),
                         sample_counts={t.name: 2 for t in competition.tasks})
for _ in range(2):
    outcome = run_isolated(sys.argv[1], competition, data, deadline_s=300,
                           options={"device": "cpu", "batch_tokens": 4096, "label": "uid 3"})
    print(outcome.ok, outcome.reason, sorted(outcome.tasks))
"""


def test_a_scoring_child_logs_its_progress_and_no_library_noise(tiny_model_dir, tmp_path):
    # A fresh interpreter, as the daemon runs: its fork server, its children, its exit.
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")}  # the child's own switches
    env["PYTHONPATH"] = str(root)
    run = subprocess.run([sys.executable, "-c", CHILD_RUN, str(tiny_model_dir)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("True  ['FINEWEB', 'IF_EVAL_V2', 'SYNTHETIC_MMLU', 'WORD_SORTING']") == 2, run.stdout
    for task in ("SYNTHETIC_MMLU", "WORD_SORTING", "FINEWEB", "IF_EVAL_V2"):
        assert f"uid 3: {task} started, " in run.stderr
        assert f"uid 3: {task} done, " in run.stderr
    for noise in ("Loading weights", "Writing model shards", "FutureWarning", "past_key_values", "LOAD REPORT",
                  "PAD/BOS/EOS", "leaked semaphore", "[transformers]"):
        assert noise not in run.stderr, f"{noise!r} in the child's output:\n{run.stderr}"


SEMAPHORE_RUNS = """
from finetune.validator.worker import run_isolated
from tests.validator import jobs

for _ in range(4):
    assert run_isolated("/m", None, None, deadline_s=60, job=jobs.semaphore_job).ok
"""


def test_children_that_answered_leave_no_semaphore_behind():
    # Killed as soon as it had answered, a child left its semaphores to the resource
    # tracker, which warned at the validator's exit ("There appear to be 3 leaked semaphore
    # objects").
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", SEMAPHORE_RUNS], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "leaked" not in run.stderr, run.stderr
