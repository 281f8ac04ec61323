"""Module-level jobs for the isolated worker (a child process must be able to import them)."""

import os
import time


def ok_job(model_dir, competition, task_data, options):
    return {"total": 0.25, "tasks": {"t": {"raw": 0.5, "normalized": 0.5, "weighted": 0.25, "samples": 3}},
            "dropped": {}, "echo": [model_dir, competition, task_data, options]}


def nan_job(model_dir, competition, task_data, options):
    return {"total": float("nan"), "tasks": {}, "dropped": {}}


def crash_job(model_dir, competition, task_data, options):
    os._exit(3)


def hang_job(model_dir, competition, task_data, options):
    time.sleep(600)


def oom_job(model_dir, competition, task_data, options):
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


def rejected_job(model_dir, competition, task_data, options):
    from finetune.errors import ModelRejected

    raise ModelRejected("no safetensors", reason="unsafe_files")


def negative_job(model_dir, competition, task_data, options):
    return {"total": -0.5, "tasks": {}, "dropped": {}}
