"""A merging-competition entry (SPEC §9): the listed experts, merged, optionally re-calibrated,
and declared in `submission.json` with the time and memory it took.

`fetch_listed` downloads a published expert list's base and experts at their pinned revisions;
`build_merge_submission` merges them with one of the five methods (`finetune.mining.merge`),
optionally trains the result briefly on a re-calibration data set with the miner's trainer,
and writes the manifest validators check (`finetune.submission`): method, base and experts
(repo, revision, licence), merge seconds, the process's peak memory, the re-calibration run.
"""

from __future__ import annotations

import logging
import resource
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from finetune.competition import Competition, Expert, ExpertList
from finetune.datasets import DataConfig
from finetune.errors import ConfigError
from finetune.mining.merge import MergeReport, merge_models
from finetune.storage.files import allowed_files_in
from finetune.submission import MergeSubmission, ModelRef, Recalibration

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListedModel:
    expert: Expert
    revision: str
    path: Path

    def ref(self) -> ModelRef:
        return ModelRef(repo=self.expert.repo, revision=self.revision, license=self.expert.license)


def pinned_revision(expert: Expert, pins: Mapping[str, str]) -> str:
    """The revision to merge: the list's pin, else the miner's `--pin REPO@REV`.

    Raises:
        ConfigError: neither pins one, or the miner's pin contradicts the list's.
    """
    pin = pins.get(expert.repo)
    if expert.revision is not None and pin is not None and pin != expert.revision:
        raise ConfigError(f"{expert.repo}: the list pins {expert.revision}, not {pin}")
    revision = expert.revision or pin
    if revision is None:
        raise ConfigError(f"the expert list pins no revision of {expert.repo}; pass --pin {expert.repo}@REVISION")
    return revision


def fetch_listed(experts: ExpertList, store, dest: Path, pins: Mapping[str, str] = {}) -> tuple[ListedModel | None, list[ListedModel]]:  # noqa: B006 - read only
    """Download the list's base (if any) and experts at their revisions into `dest/<n>`.

    Returns:
        (base or None, experts in list order).

    Raises:
        ConfigError: a revision is not pinned; storage errors of the store.
    """
    fetched = []
    for index, expert in enumerate(experts.entries()):
        revision = pinned_revision(expert, pins)
        path = store.download(expert.repo, revision, dest / f"{index}")
        fetched.append(ListedModel(expert, revision, path))
    if experts.base is not None:
        return fetched[0], fetched[1:]
    return None, fetched


def peak_memory_bytes() -> int:
    """This process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _recalibrate(model_dir: Path, competition: Competition, dataset: str, steps: int, seed: int,
                 work: Path, data: DataConfig) -> Recalibration:
    """A short run of the miner's trainer on `dataset` (task loader ids or Hub dataset ids,
    comma-separated); the best weights replace the merged ones in `model_dir`."""
    from transformers import AutoTokenizer

    from finetune.datasets import known_datasets
    from finetune.eval import prepare_task_data
    from finetune.mining.sft_data import encode_pairs, load_pairs, task_pairs
    from finetune.mining.train import TrainOptions, train_model

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    count = max(steps * 8, 32)
    pairs = []
    for source in (d.strip() for d in dataset.split(",") if d.strip()):
        pairs += (task_pairs([source], seed=seed, count=count, config=data) if source in known_datasets()
                  else load_pairs(source, max_rows=count))
    if not pairs:
        raise ConfigError(f"re-calibration data set {dataset!r} gave no training pairs")
    examples = encode_pairs(tokenizer, pairs, max_length=competition.constraints.sequence_length)
    task_data = prepare_task_data(competition, seed=seed + 1, config=data)
    options = TrainOptions(out_dir=work, max_steps=steps, learning_rate=1e-3, batch_size=8, warmup=0.0,
                           eval_every=0, save_every=10**9, logging_steps=10**9, device="cpu", seed=seed)
    report = train_model(model_dir, competition, examples, task_data, options, tokenizer=tokenizer)
    for path in allowed_files_in(report.best_dir):
        shutil.copyfile(path, model_dir / path.name)
    return Recalibration(dataset=dataset, steps=report.steps, seconds=round(time.monotonic() - started, 3))


def build_merge_submission(
    *,
    method: str,
    base: ListedModel | None,
    experts: Sequence[ListedModel],
    out_dir: Path,
    competition: Competition | None = None,
    recalibrate: str | None = None,
    recalibrate_steps: int = 20,
    data_config: DataConfig | None = None,
    seed: int = 0,
    **merge_options,
) -> tuple[MergeSubmission, MergeReport]:
    """Merge, optionally re-calibrate, and write `out_dir/submission.json`.

    Args:
        method: one of the five merge methods.
        base, experts: from `fetch_listed` (or local folders wrapped in `ListedModel`).
        out_dir: the merged model (what to upload).
        competition: whose scoring the re-calibration keeps its best weights by; required
            with `recalibrate`.
        recalibrate: a task loader id or Hub dataset id to train on briefly; None: none.
        recalibrate_steps: optimiser steps of that run.
        **merge_options: weights, density, lam, slerp_t, dtype, ... of `merge_models`.

    Returns:
        The manifest written, and the merge's own report.

    Raises:
        ConfigError: re-calibration without a competition; what `merge_models` raises.
    """
    from finetune.mining.recipe import write_manifest

    if recalibrate and competition is None:
        raise ConfigError("--recalibrate needs --competition (its scoring picks the best weights)")
    report = merge_models(method=method, base=base.path if base else None, models=[e.path for e in experts],
                          out_dir=out_dir, seed=seed, **merge_options)
    recal = None
    if recalibrate:
        recal = _recalibrate(out_dir, competition, recalibrate, recalibrate_steps, seed,
                             out_dir.parent / f"{out_dir.name}.recalibration", data_config or DataConfig(offline=True))
    manifest = MergeSubmission(
        kind="merge", method=report.method, base=base.ref() if base else None,
        experts=tuple(e.ref() for e in experts), merge_seconds=report.elapsed_s,
        peak_memory_bytes=peak_memory_bytes(), recalibration=recal,
    )
    write_manifest(out_dir, manifest)
    return manifest, report


__all__ = ["ListedModel", "build_merge_submission", "fetch_listed", "peak_memory_bytes", "pinned_revision"]
