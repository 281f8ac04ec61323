"""The submission manifest of the seeds' competitions (SPEC §9): parse it, then check it.

A model entered in EFFICIENT_1GPU_1DAY or MERGE_GENERALIST carries a `submission.json` in its
repo, next to the weights (not part of the content hash: the committed revision pins it):

- ``recipe`` (1 GPU / 1 day): the base model it was trained from (repo + revision), the
  miner's training settings (and their SHA-256), the data it was trained on, the seconds the
  training took and on what device; `scripts/reproduce.py` re-runs exactly that.
- ``merge``: the method, the base and the experts merged (repo, revision, licence), the
  seconds and peak memory the merge took, and the re-calibration run if there was one.

Everything in it is the miner's text: the file is size-capped before it is read, parsed by
one pydantic model that forbids unknown fields, and every string is bounded; the checks only
compare it with the competition's rules and the model's own `config.json`. A broken rule is a
`ModelRejected` whose `reason` names it (`finetune.validator.reasons` explains each code).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from finetune.competition import ModelConstraints, SubmissionRules
from finetune.errors import ModelRejected
from finetune.text import printable

SUBMISSION_FILE = "submission.json"
# A manifest is a few hundred bytes; 64 KiB leaves room for a long settings file and data list
# while keeping a hostile one from costing the validator memory (JSON parses at ~20x its size).
MAX_SUBMISSION_BYTES = 64 * 1024
MERGE_METHODS = ("linear", "task_arithmetic", "ties", "dare", "slerp")

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_REVISION = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_Text = Annotated[str, Field(max_length=200)]
_Scalar = str | int | Annotated[float, Field(allow_inf_nan=False)] | bool | None  # JSON has no NaN


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRef(_Frozen):
    """A model on the hub at a pinned commit, with its licence where the rules ask for one."""

    repo: str
    revision: str
    license: str = Field(default="", max_length=64)

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        if not _REPO_ID.fullmatch(value) or ".." in value:
            raise ValueError("repo must be NAMESPACE/NAME")
        return value

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str) -> str:
        if not _REVISION.fullmatch(value):
            raise ValueError("revision must be a 40-hex commit")
        return value


def settings_sha256(settings: Mapping[str, object]) -> str:
    """SHA-256 (hex) of a settings mapping in canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Recipe(_Frozen):
    """How a recipe submission was trained: enough for the organisers to run it again."""

    settings: dict[Annotated[str, Field(max_length=64)], _Scalar | list[_Text]] = Field(max_length=128)
    settings_sha256: str
    data: tuple[_Text, ...] = Field(min_length=1, max_length=32)
    train_seconds: float = Field(ge=0, allow_inf_nan=False)
    device: str = Field(default="", max_length=64)

    @field_validator("settings_sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        if not _SHA256.fullmatch(value):
            raise ValueError("settings_sha256 must be 64 hex digits")
        return value


class RecipeSubmission(_Frozen):
    kind: Literal["recipe"]
    base: ModelRef
    recipe: Recipe


class Recalibration(_Frozen):
    """Light training of the merged model on re-calibration data (the miner's trainer)."""

    dataset: _Text
    steps: int = Field(ge=0, le=10**9)
    seconds: float = Field(ge=0, allow_inf_nan=False)


class MergeSubmission(_Frozen):
    kind: Literal["merge"]
    method: Literal["linear", "task_arithmetic", "ties", "dare", "slerp"]
    base: ModelRef | None = None
    experts: tuple[ModelRef, ...] = Field(min_length=1, max_length=16)
    merge_seconds: float = Field(ge=0, allow_inf_nan=False)
    peak_memory_bytes: int = Field(ge=0, le=2**63)
    recalibration: Recalibration | None = None

    @property
    def total_seconds(self) -> float:
        return self.merge_seconds + (self.recalibration.seconds if self.recalibration else 0.0)


Submission = Annotated[RecipeSubmission | MergeSubmission, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[RecipeSubmission | MergeSubmission] = TypeAdapter(Submission)


def parse_submission(raw: bytes | None) -> RecipeSubmission | MergeSubmission:
    """Parse a manifest's bytes (already capped by the reader).

    Raises:
        ModelRejected: ``missing_manifest`` (None: the repo has no `submission.json`) or
            ``bad_manifest`` (too large, not UTF-8 JSON, or not the schema; the message names
            the first broken fields, escaped and bounded).
    """
    if raw is None:
        raise ModelRejected(f"the revision has no {SUBMISSION_FILE}", reason="missing_manifest")
    if len(raw) > MAX_SUBMISSION_BYTES:
        raise ModelRejected(f"{SUBMISSION_FILE} is over {MAX_SUBMISSION_BYTES} bytes", reason="bad_manifest")
    try:
        manifest = _ADAPTER.validate_json(raw)
    except ValidationError as error:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in error.errors()[:3]
        )
        raise ModelRejected(f"{SUBMISSION_FILE}: {printable(where, 240)}", reason="bad_manifest") from None
    if isinstance(manifest, RecipeSubmission) and settings_sha256(manifest.recipe.settings) != manifest.recipe.settings_sha256:
        raise ModelRejected(f"{SUBMISSION_FILE}: settings_sha256 is not the hash of the settings",
                            reason="bad_manifest")
    return manifest


# -- 1 GPU / 1 day: is the declared base an approved family's *base* model? ------------------
# config.json `model_type` -> family (the names of `APPROVED_BASE_FAMILIES`). A type absent
# here cannot be placed in a family by this validator: the verdict is "unsure".
MODEL_TYPE_FAMILY: dict[str, str] = {
    "llama": "llama", "mistral": "mistral", "qwen2": "qwen", "qwen": "qwen", "falcon": "falcon",
    "gpt_neox": "gpt_neox", "gptj": "gptj", "gpt_neo": "gpt_neo", "gpt2": "gpt2", "opt": "opt",
    "bloom": "bloom", "mpt": "mpt", "t5": "t5", "bart": "bart", "bert": "bert", "internlm": "internlm",
    "deci": "decilm", "phi": "phi", "phi3": "phi", "gemma": "gemma", "gemma2": "gemma",
}  # fmt: skip
# Words in a repo name that name a family (names are normalised: lower case, `-` and `.` as `_`).
_NAME_FAMILY: dict[str, str] = {
    "llama": "llama", "open_llama": "llama", "openllama": "llama", "mistral": "mistral",
    "qwen": "qwen", "falcon": "falcon", "pythia": "gpt_neox", "gpt_neox": "gpt_neox",
    "redpajama": "gpt_neox", "gpt_j": "gptj", "gptj": "gptj", "gpt_neo": "gpt_neo", "gpt2": "gpt2",
    "cerebras": "gpt2", "opt": "opt", "bloom": "bloom", "mpt": "mpt", "t5": "t5", "ul2": "t5",
    "bart": "bart", "bert": "bert", "internlm": "internlm", "decilm": "decilm", "phi": "phi",
    "gemma": "gemma",
}  # fmt: skip
# Marks of a model tuned to follow instructions or chat: not a base model.
# Found anywhere in the name once separators are removed ("Llama2Instruct", "OpenHermes"), so
# gluing or abbreviating does not hide them; the short ones only as whole words ("gemma-7b-it").
INSTRUCT_MARKERS = ("instruct", "instr", "chat", "sft", "rlhf", "dpo", "assistant", "vicuna", "alpaca",
                    "zephyr", "hermes", "tulu", "orca", "distill", "dolphin", "wizard", "starling")
INSTRUCT_WORDS = ("it", "i")


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


def _name_families(name: str) -> set[str]:
    normal = re.sub(r"[-.]", "_", name.lower().rsplit("/", 1)[-1])
    found = set()
    for word, family in _NAME_FAMILY.items():
        # a family word at a word start: "pythia_1b", "qwen2_5_7b", "tiny_llama_base"
        if re.search(rf"(^|_){re.escape(word)}(?=$|_|\d)", normal):
            found.add(family)
    return found


def judge_base(repo: str, config: Mapping[str, object], families: tuple[str, ...]) -> str:
    """Whether `repo` (with the submission's `config`) is a base model of an approved family.

    Judged from the declared repo's name and the model's own config.json (`model_type`, and
    `_name_or_path` where the trainer kept it): the validator does not download the base.

    Returns:
        A short note of what was judged (recorded with the model).

    Raises:
        ModelRejected: ``instruct_base`` (an instruct/chat mark in the name or the config's
            path), ``unapproved_family`` (the config's family is not approved) or
            ``unsure_base`` (no family can be told, or the name and the config disagree).
    """
    model_type = str(config.get("model_type", ""))
    origin = config.get("_name_or_path")
    for name in (repo, origin if isinstance(origin, str) else ""):
        words = _words(name.rsplit("/", 1)[-1])
        compact = "".join(words)
        marks = [m for m in INSTRUCT_MARKERS if m in compact] + [w for w in words if w in INSTRUCT_WORDS]
        if marks:
            raise ModelRejected(f"base {printable(name, 80)} is an instruction-tuned model ({marks[0]!r} in its "
                                "name); start from a base model", reason="instruct_base")
    family = MODEL_TYPE_FAMILY.get(model_type)
    if family is None:
        raise ModelRejected(f"unsure: model_type {printable(model_type, 40)!r} is not one this validator can "
                            "place in a family", reason="unsure_base")
    if family not in families:
        raise ModelRejected(f"family {family} (model_type {model_type}) is not approved; approved: "
                            f"{', '.join(families)}", reason="unapproved_family")
    named = _name_families(repo)
    if not named:
        raise ModelRejected(f"unsure: the name {printable(repo, 80)} names no family (config says {family}); "
                            "declare the base under its published name", reason="unsure_base")
    if family not in named:
        raise ModelRejected(f"unsure: the name {printable(repo, 80)} says {', '.join(sorted(named))}, the "
                            f"config says {family}", reason="unsure_base")
    return f"{family} base"


_FILE_SUFFIX = re.compile(r"\.(jsonl?|parquet|csv|tsv|txt|arrow)$", re.IGNORECASE)


def _open_data(entry: str, listed: tuple[str, ...]) -> bool:
    """A recipe's data entry is open when it is a listed generator (a task loader) or a Hub
    dataset id (NAMESPACE/NAME, not a file name): what anyone can fetch and re-run."""
    return entry in listed or (_REPO_ID.fullmatch(entry) is not None and ".." not in entry
                               and not _FILE_SUFFIX.search(entry))


def _strings(value: object) -> list[str]:
    """A settings entry as a list of names ([] when absent; a lone string is one name)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _check_recipe(manifest: RecipeSubmission, rules: SubmissionRules, constraints: ModelConstraints,
                  config: Mapping[str, object]) -> dict[str, str | float]:
    judged = judge_base(manifest.base.repo, config, constraints.approved_families or ())
    # The data a re-run trains on is the settings' (`RecipeSettings.tasks` then `.data`); the
    # declared list must be exactly that, or the open-data rule would check another list.
    settings = manifest.recipe.settings
    trained = tuple(_strings(settings.get("tasks"))) + tuple(_strings(settings.get("data")))
    if trained != tuple(manifest.recipe.data):
        raise ModelRejected(f"{SUBMISSION_FILE}: recipe.data {printable(str(list(manifest.recipe.data)), 120)} is not "
                            f"what the settings train on ({printable(str(list(trained)), 120)})",
                            reason="bad_manifest")
    closed = [d for d in manifest.recipe.data if not _open_data(d, rules.open_data)]
    if closed:
        raise ModelRejected(f"data {printable(', '.join(closed), 120)}: neither a published Hub dataset id "
                            "nor a listed generator; a local file cannot be checked or re-run", reason="closed_data")
    if manifest.recipe.train_seconds > rules.max_hours * 3600:
        raise ModelRejected(f"declared training of {manifest.recipe.train_seconds:.0f}s is over the "
                            f"{rules.max_hours:g} h budget", reason="over_budget")
    return {"kind": "recipe", "base": f"{manifest.base.repo}@{manifest.base.revision[:8]}", "judged": judged,
            "train_seconds": manifest.recipe.train_seconds, "settings_sha256": manifest.recipe.settings_sha256}


def _check_merge(manifest: MergeSubmission, rules: SubmissionRules) -> dict[str, str | float]:
    declared = ([manifest.base] if manifest.base else []) + list(manifest.experts)
    repos = [m.repo.lower() for m in declared]
    if len(set(repos)) != len(repos):  # padding the list with one expert many times
        raise ModelRejected(f"{SUBMISSION_FILE}: a model is declared twice ({printable(', '.join(repos), 120)})",
                            reason="bad_manifest")
    for model in declared:
        listed = rules.experts.find(model.repo) if rules.experts else None
        if rules.experts is not None and (listed is None or listed.revision not in (None, model.revision)):
            raise ModelRejected(f"{printable(model.repo, 80)}@{model.revision[:8]} is not on the published "
                                "expert list", reason="unlisted_expert")
        licence = listed.license if listed else model.license
        # Hub repo ids and licence tags are case-insensitive.
        if rules.licenses and (licence.lower() not in rules.licenses or model.license.lower() != licence.lower()):
            raise ModelRejected(f"{printable(model.repo, 80)}: licence {printable(model.license, 40)!r} is not "
                                "a research-compatible licence of the list", reason="bad_license")
    if manifest.total_seconds > rules.max_hours * 3600:
        raise ModelRejected(f"declared merge of {manifest.total_seconds:.0f}s is over the {rules.max_hours:g} h "
                            "budget", reason="over_budget")
    if rules.max_memory_bytes is not None and manifest.peak_memory_bytes > rules.max_memory_bytes:
        raise ModelRejected(f"declared peak memory {manifest.peak_memory_bytes} B is over "
                            f"{rules.max_memory_bytes} B", reason="over_budget")
    return {"kind": "merge", "method": manifest.method, "merge_seconds": manifest.merge_seconds,
            "peak_memory_bytes": float(manifest.peak_memory_bytes),
            "recalibration": manifest.recalibration.dataset if manifest.recalibration else "",
            "total_seconds": manifest.total_seconds}


def check_submission(raw: bytes | None, constraints: ModelConstraints, config: Mapping[str, object]) -> dict[str, str | float]:
    """Parse and check a submission's manifest against its competition's rules.

    Args:
        raw: the bytes of `submission.json` (None: the revision has none).
        constraints: the competition's constraints; `constraints.submission` must be set.
        config: the model's own config.json (family and base judgement).

    Returns:
        What the validator records with the model (its efficiency figures for a merge): plain
        values, strings escaped and bounded.

    Raises:
        ModelRejected: the manifest is missing, malformed, of the wrong kind, or breaks a rule
            (codes in `finetune.validator.reasons`).
    """
    rules = constraints.submission
    assert rules is not None, "only competitions with submission rules read a manifest"
    manifest = parse_submission(raw)
    if manifest.kind != rules.kind:
        raise ModelRejected(f"{SUBMISSION_FILE} is a {manifest.kind} manifest; this competition needs a "
                            f"{rules.kind} one", reason="bad_manifest")
    if isinstance(manifest, RecipeSubmission):
        summary = _check_recipe(manifest, rules, constraints, config)
    else:
        summary = _check_merge(manifest, rules)
    return {k: (printable(v, 120) if isinstance(v, str) else v) for k, v in summary.items()
            if isinstance(v, str) or math.isfinite(v)}


__all__ = [
    "INSTRUCT_MARKERS",
    "MAX_SUBMISSION_BYTES",
    "MERGE_METHODS",
    "MODEL_TYPE_FAMILY",
    "SUBMISSION_FILE",
    "MergeSubmission",
    "ModelRef",
    "Recalibration",
    "Recipe",
    "RecipeSubmission",
    "check_submission",
    "judge_base",
    "parse_submission",
    "settings_sha256",
]
