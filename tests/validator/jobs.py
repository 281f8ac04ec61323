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


def memory_bomb_job(model_dir, competition, task_data, options):
    """`task_data` bytes at once, as a template's `'x' * n` asks."""
    return {"total": float(len("x" * task_data)), "tasks": {}, "dropped": {}}


def shared_memory_job(model_dir, competition, task_data, options):
    """Touch `task_data` bytes of a shared anonymous mapping, 64 MiB at a time."""
    import mmap

    block = mmap.mmap(-1, task_data)
    step = 64 << 20
    for start in range(0, task_data, step):
        block[start : start + step] = b"x" * step
        time.sleep(0.02)
    return {"total": 0.0, "tasks": {}, "dropped": {}}


_KEPT = []


def semaphore_job(model_dir, competition, task_data, options):
    """Makes a named semaphore that lives until the process exits, as tqdm's class-wide lock
    for its bars does, and answers at once."""
    import multiprocessing

    _KEPT.append(multiprocessing.RLock())
    return {"total": 0.0, "tasks": {}, "dropped": {}}
