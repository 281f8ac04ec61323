"""The round benchmark: a local subnet whose validator scores a whole round of N models.

What an operator pays for is a round, not a method: the local subnet of the demo and the
validator tests (a devnet chain, a directory hub, N miners committing models of the same
shape to one competition) and the real validator loop, `Validator.run_once`, in its real
worker processes. Each model's time is split into phases: download, checks (the hash and
file checks, in their child), worker start, model load, tokenization, scoring (the engine's
calls) and result transfer; what is left of the round (metagraph, data, ranking, weights,
state) is ``other``. The verdict is the share of the round that is not scoring.

The fetcher and the worker call are wrapped to time them; the wrapper of the worker call runs
the validator's own job (`worker._default_job`) in the validator's own child process
(`isolation.run_in_child`), as `worker.run_isolated` does, because `WorkerOutcome` does not
carry the job's timings yet (see the report's `needed` notes).

Used by ``scripts/run_benchmarks.py`` (its ``round`` section; ``--round-models N``).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402

from competitions import tasks  # noqa: E402
from competitions.local import TINY_ARCHITECTURES  # noqa: E402
from finetune.chain import DevnetChain, ModelId  # noqa: E402
from finetune.competition import (  # noqa: E402
    Competition,
    CompetitionShare,
    EpsilonSpec,
    ModelConstraints,
    NormLimits,
    Schedule,
    ScheduleEntry,
)
from finetune.datasets import DataConfig  # noqa: E402
from finetune.protocol import NEXT  # noqa: E402
from finetune.storage import DirModelStore, ModelCache, content_hash, secure_hash  # noqa: E402
from finetune.validator import worker  # noqa: E402
from finetune.validator.fetcher import StoreFetcher  # noqa: E402
from finetune.validator.isolation import run_in_child  # noqa: E402
from finetune.validator.loop import LoopConfig, Validator  # noqa: E402

logger = logging.getLogger("bench_round")

VALIDATOR = "5BenchValidatorHotkey"
PHASES = ("download", "checks", "worker_start", "model_load", "tokenization", "scoring",
          "result_transfer")
GIB = 1024**3


def bench_competition(*, samples: int, sequence_length: int, fixed_tokenizer: bool,
                      dtype: str = "float32") -> Competition:
    """DISTILLED_REASONING_3B's tasks (reference loss on reasoning traces), sized for the
    benchmark's models (up to the 8B shape): its fixed gpt-4 tokenizer, `dtype` (float32 on a
    CPU), `samples` per task."""
    return Competition(
        id=250,
        name="BENCH_REASONING",
        constraints=ModelConstraints(
            max_params=8_100_000_000,
            max_bytes=40 * GIB,
            sequence_length=sequence_length,
            allowed_architectures=TINY_ARCHITECTURES,
            tokenizer="Xenova/gpt-4" if fixed_tokenizer else None,
            load_dtype=dtype,
            eval_block_delay=0,
            epsilon=EpsilonSpec(start=0.05, end=0.01, decay_blocks=100),
            norm_limits=NormLimits(),
        ),
        tasks=(tasks.synthetic_1_sft(0.5, samples=samples), tasks.codeforces_cots(0.5, samples=samples)),
    )


class TimedFetcher:
    """The validator's `StoreFetcher`, with the seconds of each download and check kept."""

    def __init__(self, inner: StoreFetcher) -> None:
        self.inner = inner
        self.seconds: dict[str, dict[str, float]] = {}

    def __getattr__(self, name: str):  # any other fetcher method, untimed
        return getattr(self.inner, name)

    def _add(self, hotkey: str, phase: str, start: float) -> None:
        entry = self.seconds.setdefault(hotkey, {})
        entry[phase] = entry.get(phase, 0.0) + time.perf_counter() - start

    def inspect(self, model_id, constraints, protocol=NEXT):
        start = time.perf_counter()
        try:
            return self.inner.inspect(model_id, constraints, protocol)
        finally:
            self._add(model_id.repo_id, "download", start)  # listings and headers: pre-download

    def fetch(self, hotkey: str, model_id):
        start = time.perf_counter()
        try:
            return self.inner.fetch(hotkey, model_id)
        finally:
            self._add(model_id.repo_id, "download", start)

    def verify(self, model_dir, hotkey, model_id, constraints, protocol=NEXT, should_abort=None):
        start = time.perf_counter()
        try:
            return self.inner.verify(model_dir, hotkey, model_id, constraints, protocol, should_abort)
        finally:
            self._add(model_id.repo_id, "checks", start)

    def mark_used(self, hotkey: str, revision: str) -> None:
        self.inner.mark_used(hotkey, revision)

    def using(self, hotkey: str, revision: str):
        return self.inner.using(hotkey, revision)


class TimedEvaluate:
    """`worker.run_isolated`, keeping the job's timings and the parent's view of the call."""

    def __init__(self, options: dict | None = None) -> None:
        self.extra = dict(options or {})
        self.records: dict[str, dict[str, float]] = {}

    def __call__(self, model_dir, competition, task_data, *, deadline_s: float, options=None,
                 should_abort: Callable[[], bool] | None = None, memory_bytes: int | None = None):
        args = (str(model_dir), competition, task_data, {**(options or {}), **self.extra})
        called = time.time()
        child = run_in_child(worker._default_job, args, deadline_s=deadline_s,
                             memory_bytes=memory_bytes, should_abort=should_abort)
        returned = time.time()
        outcome = worker._outcome(child, deadline_s)
        timings = dict(child.value.get("timings", {})) if child.status == "ok" else {}
        self.records[str(model_dir)] = {"called": called, "returned": returned, **timings,
                                        "ok": outcome.ok, "reason": outcome.reason}
        return outcome


def _publish(chain, store, model_dir: Path, *, hotkey: str, repo_id: str, competition_id: int) -> ModelId:
    """Upload and commit as a miner would (the demo's and the validator tests' shortcut)."""
    commit = store.upload(model_dir, repo_id, private=False)
    with tempfile.TemporaryDirectory() as tmp:
        digest = content_hash(store.download(repo_id, commit, Path(tmp) / "m"))
    model_id = ModelId.for_repo(repo_id, commit=commit, secure_hash=secure_hash(digest, hotkey),
                                competition_id=competition_id)
    chain.publish_commitment(hotkey, model_id.to_commitment())
    return model_id


def _phases(fetched: dict, evaluated: dict, repo_of: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per model (repo id): the seconds of each phase."""
    per_model = {}
    for model_dir, record in evaluated.items():
        repo = repo_of.get(model_dir)
        fetch = fetched.get(repo, {})
        started = record.get("job_started_at", record["called"])
        finished = record.get("job_finished_at", record["returned"])
        per_model[repo or model_dir] = {
            "download": fetch.get("download", 0.0),
            "checks": fetch.get("checks", 0.0),
            "worker_start": started - record["called"],
            "model_load": record.get("load_s", 0.0),
            "tokenization": record.get("tokenize_s", 0.0),
            "scoring": record.get("score_s", 0.0),
            "result_transfer": record["returned"] - finished,
            # The job's time outside its phases (all of it when it never reported: a failure).
            "job_other": max(0.0, finished - started - record.get("total_s", 0.0)),
        }
    return per_model


def run_round(work: Path, model_dirs: list[Path], competition: Competition, data: DataConfig, *,
              device: str = "cpu", batch_tokens: int = 8192, tokenizer_dir: Path | None = None,
              options: dict | None = None) -> dict:
    """Publish `model_dirs` to a fresh local subnet and time one validator round over them.

    Args:
        work: an empty folder for the chain, the hub, the cache and the state.
        model_dirs: one model per miner, all for `competition`.
        competition: the only competition of the round's schedule.
        data: where the round's samples come from (offline).
        device: the workers' device.
        batch_tokens: the engine's token budget.
        tokenizer_dir: where a fixed tokenizer's files are.
        options: extra keyword options for `evaluate_model` in the worker.

    Returns:
        ``models``, ``total_s``, ``scoring_s``, ``overhead_fraction`` (all of `run_once`:
        downloads and checks first, then the round), ``overlapped_total_s`` and
        ``overlapped_overhead_fraction`` (without the downloads and checks, which the daemon's
        updater thread does beside the round), ``phases`` (phase -> ``total_s`` and
        ``mean_s``, plus ``other``: the rest of the round), ``per_model``,
        ``failed`` (models whose scoring failed, with the reason) and ``scores``.
    """
    chain = DevnetChain(work / "devnet.sqlite", netuid=1, block_time_s=3600.0, commit_rate_limit=0,
                        weights_rate_limit=0)
    chain.register(VALIDATOR, stake=1000.0, validator_permit=True)
    store = DirModelStore(work / "hub")
    repo_of: dict[str, str] = {}
    for index, model_dir in enumerate(model_dirs):
        hotkey = f"5BenchMiner{index:03d}"
        chain.register(hotkey)
        repo = f"miner-{index:03d}/bench"
        _publish(chain, store, model_dir, hotkey=hotkey, repo_id=repo, competition_id=competition.id)
    chain.advance(2)
    cache = ModelCache(work / "models", min_free_bytes=0, grace_period_s=3600)
    fetcher = TimedFetcher(StoreFetcher(store, cache))
    evaluate = TimedEvaluate(options)
    schedule = Schedule(entries=(ScheduleEntry(
        start_block=0, protocol=NEXT, competitions=(CompetitionShare(competition=competition, reward_share=1.0),)),))
    config = LoopConfig(state_path=work / "state.json", device=device, batch_tokens=batch_tokens,
                        model_deadline_s=4 * 3600, data=data, genesis_block=0, window_blocks=360,
                        idle_s=0.1, tokenizer_dir=tokenizer_dir)
    validator = Validator(config=config, chain=chain, schedule=schedule, fetcher=fetcher, wallet=VALIDATOR,
                          cleanup=lambda keep: cache.cleanup(keep), console=Console(file=io.StringIO()),
                          evaluate=evaluate)
    # The check and scoring children fork from a server that imports torch and transformers
    # once per validator process (seconds): start it now, as a daemon has long before a round.
    run_in_child(os.getpid, (), deadline_s=600)
    start = time.perf_counter()
    rounds = validator.run_once()
    total = time.perf_counter() - start
    for model in validator.state.models.values():
        if model.local_path:
            repo_of[str(model.local_path)] = model.repo_id
    per_model = _phases(fetcher.seconds, evaluate.records, repo_of)
    return _summary(total, per_model, evaluate.records, repo_of, rounds)


def _summary(total: float, per_model: dict, records: dict, repo_of: dict, rounds: list) -> dict:
    phases = {p: sum(m[p] for m in per_model.values()) for p in (*PHASES, "job_other")}
    scoring = phases["scoring"]
    # In the daemon the updater thread downloads and checks new models while the eval loop
    # scores (`run_once` does them first, one after the other): the round without them.
    overlapped = total - phases["download"] - phases["checks"]
    n = max(1, len(per_model))
    table = {p: {"total_s": s, "mean_s": s / n} for p, s in phases.items()}
    table["other"] = {"total_s": total - sum(phases.values()), "mean_s": None}
    scores = {m.repo_id: m.score for r in rounds for m in r.models}
    failed = {repo_of.get(d, d): r["reason"] for d, r in records.items() if not r["ok"]}
    return {
        "models": len(per_model),
        "total_s": total,
        "scoring_s": scoring,
        "overhead_fraction": (total - scoring) / total if total > 0 else None,
        "overlapped_total_s": overlapped,
        "overlapped_overhead_fraction": (overlapped - scoring) / overlapped if overlapped > 0 else None,
        "phases": table,
        "per_model": per_model,
        "failed": failed,
        "scores": scores,
    }
