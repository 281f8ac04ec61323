"""1 GPU / 1 day recipes (SPEC §9): train one, declare it, and reproduce one as the organisers did.

A recipe is the miner's training settings (`RecipeSettings`, a JSON file) applied to a declared
base model. `run_recipe` trains it with the miner's trainer (`finetune.mining.train`) and writes
the `submission.json` manifest (base repo + revision, the settings and their hash, the data
list, the seconds spent) into the trained model's folder, ready to upload. `reproduce`
re-runs a submission's declared recipe from its declared base under the same budget, scores
both models with the validator's code on the same seeded data, and compares them task by task
within a tolerance: the organisers' check that a top entry is what its recipe makes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from finetune.competition import Competition
from finetune.datasets import DataConfig
from finetune.errors import ConfigError
from finetune.eval import evaluate_model, prepare_task_data
from finetune.protocol import NEXT, ScoringProtocol
from finetune.storage.files import MANIFEST_FILE
from finetune.submission import Recipe, RecipeSubmission, parse_submission, settings_sha256

logger = logging.getLogger(__name__)


class RecipeSettings(BaseModel):
    """The training settings a recipe declares (the miner's settings file).

    Attributes:
        tasks: task loaders to draw training pairs from (rule-generated or bundled data).
        data: Hub dataset ids (or `.jsonl` files, which validators reject as closed data).
        task_samples: pairs drawn per task loader; data_rows: rows read per data source.
        max_steps, lr, batch_size, warmup: the optimiser's run (see `TrainOptions`).
        seed: training seed (data order and initialisation), so a re-run draws the same.
        eval_seed: seed of the local eval data the trainer keeps its best checkpoint by.
        eval_every: local scoring every N steps (0: at the start and the end only).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tasks: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    # Bounded: whoever re-runs a recipe (the organisers) must not be made to draw or train without end.
    task_samples: int = Field(200, ge=1, le=100_000)
    data_rows: int | None = Field(None, ge=1, le=10_000_000)
    max_steps: int = Field(40, ge=1, le=10_000_000)
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(8, ge=1)
    warmup: float = Field(0.0, ge=0)
    seed: int = 1
    eval_seed: int = 0
    eval_every: int = Field(0, ge=0)

    def data_list(self) -> tuple[str, ...]:
        """What the recipe trains on, as its manifest declares it."""
        return (*self.tasks, *self.data)

    def as_manifest(self) -> dict:
        return self.model_dump(mode="json")


def read_settings(path: Path) -> RecipeSettings:
    """A settings file (JSON).

    Raises:
        ConfigError: unreadable, or not the schema.
    """
    try:
        return RecipeSettings.model_validate_json(path.read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigError(f"recipe settings {path}: {error}") from None


@dataclass(frozen=True)
class RecipeRun:
    model_dir: Path  # the trained model, with its submission.json
    manifest: RecipeSubmission
    seconds: float


def run_recipe(
    base_dir: Path,
    competition: Competition,
    settings: RecipeSettings,
    out_dir: Path,
    *,
    base_repo: str,
    base_revision: str,
    device: str = "cpu",
    data_config: DataConfig | None = None,
) -> RecipeRun:
    """Train `settings` from the base in `base_dir` and declare it in `submission.json`.

    Args:
        base_dir: the base model's files (as downloaded at `base_revision`).
        competition: whose budget (`constraints.submission.max_hours`) and scoring apply.
        settings: the recipe.
        out_dir: the trainer's output folder; the model is its ``best/``.
        base_repo, base_revision: what the manifest declares as the base.

    Returns:
        The trained model's folder and its manifest.

    Raises:
        ConfigError: the competition takes no recipes, or the recipe has no training data.
    """
    from transformers import AutoTokenizer

    from finetune.mining.sft_data import encode_pairs, load_pairs, task_pairs
    from finetune.mining.train import TrainOptions, train_model

    rules = competition.constraints.submission
    if rules is None or rules.kind != "recipe":
        raise ConfigError(f"{competition.name} takes no recipe submissions")
    data = data_config or DataConfig(offline=True)
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    pairs = task_pairs(settings.tasks, seed=settings.seed, count=settings.task_samples, config=data)
    for source in settings.data:
        pairs += load_pairs(source, max_rows=settings.data_rows)
    if not pairs:
        raise ConfigError("the recipe has no training data (tasks and data are empty)")
    examples = encode_pairs(tokenizer, pairs, max_length=competition.constraints.sequence_length)
    task_data = prepare_task_data(competition, seed=settings.eval_seed, config=data)
    options = TrainOptions(out_dir=out_dir, max_hours=rules.max_hours, max_steps=settings.max_steps,
                           learning_rate=settings.lr, batch_size=settings.batch_size, warmup=settings.warmup,
                           eval_every=settings.eval_every, save_every=10**9, logging_steps=10**9,
                           device=device, seed=settings.seed)
    report = train_model(base_dir, competition, examples, task_data, options, tokenizer=tokenizer)
    seconds = time.monotonic() - started
    manifest = RecipeSubmission(
        kind="recipe", base={"repo": base_repo, "revision": base_revision},
        recipe=Recipe(settings=settings.as_manifest(), settings_sha256=settings_sha256(settings.as_manifest()),
                      data=settings.data_list(), train_seconds=round(seconds, 3), device=device),
    )
    write_manifest(report.best_dir, manifest)
    return RecipeRun(model_dir=report.best_dir, manifest=manifest, seconds=seconds)


def write_manifest(model_dir: Path, manifest: BaseModel) -> Path:
    """Write `submission.json` into `model_dir` (uploaded with the model)."""
    path = Path(model_dir) / MANIFEST_FILE
    path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def read_recipe_manifest(model_dir: Path) -> RecipeSubmission:
    """The recipe manifest of a submitted model folder (size-capped, validated).

    Raises:
        ModelRejected: missing, malformed or not a recipe (`bad_manifest`).
    """
    from finetune.errors import ModelRejected
    from finetune.storage.files import MAX_MANIFEST_BYTES

    path = Path(model_dir) / MANIFEST_FILE
    raw = None
    if path.is_file():
        with path.open("rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    manifest = parse_submission(raw)
    if not isinstance(manifest, RecipeSubmission):
        raise ModelRejected(f"{MANIFEST_FILE} declares a {manifest.kind}, not a recipe", reason="bad_manifest")
    return manifest


@dataclass(frozen=True)
class Tolerance:
    """A reproduced task score matches when |submitted - reproduced| <= atol + rtol * |reproduced|.

    CPU and GPU kernels, thread counts and library versions move a loss in its third or
    fourth digit; a model whose weights were changed after training moves it far more.
    """

    atol: float = 0.02
    rtol: float = 0.02

    def allows(self, submitted: float, reproduced: float) -> bool:
        if math.isinf(submitted) or math.isinf(reproduced):
            return submitted == reproduced
        return abs(submitted - reproduced) <= self.atol + self.rtol * abs(reproduced)


@dataclass(frozen=True)
class Reproduction:
    """The verdict: per task, the submitted and reproduced raw scores and whether they match."""

    reproduced: bool
    tasks: dict[str, dict[str, float | bool]]
    seconds: float
    within_budget: bool
    tolerance: Tolerance
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"reproduced": self.reproduced, "tasks": self.tasks, "seconds": self.seconds,
                "within_budget": self.within_budget, "reasons": self.reasons,
                "tolerance": {"atol": self.tolerance.atol, "rtol": self.tolerance.rtol}}


def compare_scores(submitted: dict[str, float], reproduced: dict[str, float], tolerance: Tolerance) -> dict:
    """Per task: both raw scores, their difference and whether it is within the tolerance."""
    out: dict[str, dict[str, float | bool]] = {}
    for name in sorted(set(submitted) | set(reproduced)):
        a, b = submitted.get(name, math.inf), reproduced.get(name, math.inf)
        diff = abs(a - b) if math.isfinite(a) and math.isfinite(b) else math.inf
        out[name] = {"submitted": a, "reproduced": b, "difference": diff, "match": tolerance.allows(a, b)}
    return out


def rerun(submitted_dir: Path, base_dir: Path, competition: Competition, work_dir: Path, *,
          device: str = "cpu", data_config: DataConfig | None = None) -> RecipeRun:
    """Train a submission's declared recipe again from its declared base (under the budget).

    Raises:
        ModelRejected: the submission's manifest is missing or malformed.
        ConfigError: its settings are not a valid recipe.
    """
    manifest = read_recipe_manifest(submitted_dir)
    try:
        settings = RecipeSettings.model_validate(manifest.recipe.settings)
    except ValueError as error:
        raise ConfigError(f"the declared settings are not a recipe: {error}") from None
    return run_recipe(base_dir, competition, settings, work_dir, base_repo=manifest.base.repo,
                      base_revision=manifest.base.revision, device=device, data_config=data_config)


def compare_models(
    submitted_dir: Path,
    run: RecipeRun,
    competition: Competition,
    *,
    eval_seed: int = 12345,
    tolerance: Tolerance = Tolerance(),
    protocol: ScoringProtocol = NEXT,
    device: str = "cpu",
    data_config: DataConfig | None = None,
) -> Reproduction:
    """Score the submitted and the re-run model with the validator's code on the same seeded
    data (`eval_seed`, other than the recipe's own eval seed) and compare them per task.

    Returns:
        The verdict; `reproduced` is False when a task is out of tolerance or the re-run
        overran the competition's budget.
    """
    data = data_config or DataConfig(offline=True)
    task_data = prepare_task_data(competition, seed=eval_seed, config=data, rules=protocol.data)

    def raws(model_dir: Path) -> dict[str, float]:
        evaluation = evaluate_model(model_dir, competition, task_data, device=device, rules=protocol.eval)
        return {name: score.raw for name, score in evaluation.tasks.items()}

    tasks = compare_scores(raws(submitted_dir), raws(run.model_dir), tolerance)
    rules = competition.constraints.submission
    budget_s = (rules.max_hours if rules else math.inf) * 3600
    reasons = [f"{name}: submitted {t['submitted']:.4f}, reproduced {t['reproduced']:.4f}"
               for name, t in tasks.items() if not t["match"]]
    within = run.seconds <= budget_s
    if not within:
        reasons.append(f"the re-run took {run.seconds:.0f}s, over the {budget_s:.0f}s budget")
    return Reproduction(reproduced=not reasons, tasks=tasks, seconds=run.seconds, within_budget=within,
                        tolerance=tolerance, reasons=reasons)


def reproduce(
    submitted_dir: Path,
    base_dir: Path,
    competition: Competition,
    work_dir: Path,
    *,
    eval_seed: int = 12345,
    tolerance: Tolerance = Tolerance(),
    protocol: ScoringProtocol = NEXT,
    device: str = "cpu",
    data_config: DataConfig | None = None,
) -> Reproduction:
    """Re-run a submission's recipe (`rerun`) and compare the result with it (`compare_models`).

    Args:
        submitted_dir: the submitted model's files, with its `submission.json`.
        base_dir: the declared base model's files (at the declared revision).
        competition: the recipe competition (budget, tasks, scoring).
        work_dir: where the re-run trains.
        eval_seed: seed of the comparison's data.
        tolerance: how close each task's raw score must come.
        protocol: the scoring protocol (the competition's).

    Raises:
        ModelRejected: the submission's manifest is missing or malformed.
        ConfigError: its settings are not a valid recipe.
    """
    run = rerun(submitted_dir, base_dir, competition, work_dir, device=device, data_config=data_config)
    return compare_models(submitted_dir, run, competition, eval_seed=eval_seed, tolerance=tolerance,
                          protocol=protocol, device=device, data_config=data_config)


def dump(result: Reproduction) -> str:
    """JSON text of a verdict (infinite scores as the strings "inf")."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return "inf" if value > 0 else "-inf" if value < 0 else "nan"
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(result.to_json()), indent=2)


__all__ = [
    "RecipeRun",
    "RecipeSettings",
    "Reproduction",
    "Tolerance",
    "compare_models",
    "compare_scores",
    "dump",
    "read_recipe_manifest",
    "read_settings",
    "reproduce",
    "rerun",
    "run_recipe",
    "write_manifest",
]
