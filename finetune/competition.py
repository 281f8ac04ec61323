"""The shape of a competition: constraints, eval tasks, schedule. Types only, no data.

The definitions themselves live in the top-level `competitions/` package; everything in
`finetune/` below the orchestration layer receives these records as arguments.
"""

from __future__ import annotations

import math
import re
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from finetune.protocol import ScoringProtocol


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Method(str, Enum):
    """How a task's samples are scored (SPEC §7). Raw scores: lower is better."""

    MULTIPLE_CHOICE = "multiple_choice"  # greedy generation, first A-D letter
    MULTIPLE_CHOICE_LOGLIK = "multiple_choice_loglik"  # next-token logits of the letters
    REFERENCE_LOSS = "reference_loss"  # mean CE over reference tokens after a prompt
    TEXT_LOSS = "text_loss"  # mean CE over a document (with the degeneracy gate)
    IF_EVAL = "if_eval"  # generated answers checked against rules
    EXACT_ANSWER = "exact_answer"  # generated answer matched to a reference (BoolQ, MAWPS)


class NormKind(str, Enum):
    NONE = "none"
    INVERSE_EXPONENTIAL = "inverse_exponential"


class Normalization(_Frozen):
    """Maps a raw score to [0, 1] (or leaves it as is)."""

    kind: NormKind = NormKind.NONE
    ceiling: float | None = None

    @model_validator(mode="after")
    def _ceiling_needed(self) -> Normalization:
        if self.kind is NormKind.INVERSE_EXPONENTIAL and not (self.ceiling and self.ceiling > 0):
            raise ValueError("inverse_exponential normalisation needs a positive ceiling")
        return self

    def apply(self, raw: float) -> float:
        """Normalise one raw score; inf stays inf for NONE and maps to 1 for the exponential."""
        if self.kind is NormKind.NONE:
            return raw
        ceiling = float(self.ceiling)  # type: ignore[arg-type]
        if raw >= ceiling or math.isnan(raw):
            return 1.0
        return (1.0 - math.exp(-raw / ceiling)) / (1.0 - math.exp(-1.0))


class GenerationSpec(_Frozen):
    """Greedy decoding settings. No wall-clock limit: results must not depend on hardware."""

    max_new_tokens: int = Field(gt=0)
    repetition_penalty: float = Field(default=1.0, gt=0)


class EvalTaskSpec(_Frozen):
    """One eval task of a competition. Behaviour is data: the engine never special-cases a name."""

    name: str
    method: Method
    dataset: str  # loader id in finetune.datasets
    weight: float = Field(gt=0, le=1)
    normalization: Normalization = Normalization()
    samples: int = Field(gt=0)  # how many samples to draw per round
    min_samples: int = Field(default=1, ge=1)  # fewer available -> task dropped (SPEC §5)
    generation: GenerationSpec | None = None
    dataset_options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    version: int = 1  # bump when the task's data or scoring changes


class EpsilonSpec(_Frozen):
    """Linear decay of the advantage of an earlier upload (SPEC §5)."""

    start: float = Field(ge=0, le=1)
    end: float = Field(ge=0, le=1)
    decay_blocks: int = Field(gt=0)


class NormLimits(_Frozen):
    """Weight-norm check (SPEC §4)."""

    hard_limit: float = 1000.0
    soft_limit: float = 200.0
    max_mean_fraction_over_soft: float = 0.15


_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_REVISION = re.compile(r"[0-9a-f]{40}")


class Expert(_Frozen):
    """One published expert model of a merging competition (SPEC §9).

    Attributes:
        repo: the Hub repo id, ``namespace/name``.
        revision: the 40-hex commit a merge must use; None admits any revision of the repo
            (the devnet's experts, rebuilt by every demo run, have no fixed commit).
        license: its licence identifier (lower case, as the Hub's ``license`` tag).
        skill: what it is good at, for people (``"chat"``, ``"code"``); never checked.
    """

    repo: str
    revision: str | None
    license: str
    skill: str = ""

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        if not _REPO_ID.fullmatch(value) or ".." in value:
            raise ValueError(f"expert repo {value!r} is not NAMESPACE/NAME")
        return value

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str | None) -> str | None:
        if value is not None and not _REVISION.fullmatch(value):
            raise ValueError(f"expert revision {value!r} is not a 40-hex commit")
        return value

    @field_validator("license")
    @classmethod
    def _license(cls, value: str) -> str:
        if not value or value != value.strip().lower():
            raise ValueError(f"licence {value!r} must be a lower-case identifier")
        return value


class ExpertList(_Frozen):
    """A published expert list: the shared base (when the experts have one) and the experts.

    Its JSON form is what `scripts/merge_models.py --experts FILE` reads.
    """

    competition: str = Field(min_length=1, max_length=64)
    base: Expert | None = None
    experts: tuple[Expert, ...] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _unique(self) -> ExpertList:
        repos = [e.repo for e in self.entries()]
        if len(set(repos)) != len(repos):
            raise ValueError(f"expert list of {self.competition}: a repo is listed twice: {repos}")
        return self

    def entries(self) -> tuple[Expert, ...]:
        """The base (if any), then the experts."""
        return ((self.base,) if self.base is not None else ()) + self.experts

    def find(self, repo: str) -> Expert | None:
        """The entry of `repo`, or None when it is not on the list."""
        return next((e for e in self.entries() if e.repo.lower() == repo.lower()), None)  # the Hub ignores case


class SubmissionRules(_Frozen):
    """What a submission must declare in its `submission.json` manifest (SPEC §9).

    Attributes:
        kind: ``recipe`` (EFFICIENT_1GPU_1DAY: the base model and the training recipe) or
            ``merge`` (MERGE_GENERALIST: method, base, experts, time and memory).
        max_hours: the wall-clock budget a declared run may have used: the training
            (recipe) or the merge plus its re-calibration (merge).
        max_memory_bytes: merge only: the declared peak memory may not exceed it (None: no cap).
        licenses: the licences a declared base or expert may carry (research-compatible).
        experts: merge only: the published list; a declared model off it rejects. None: the
            declared experts are not checked against a list.
        open_data: recipe only: the data sets a recipe may name (open data); empty: not checked.
    """

    kind: Literal["recipe", "merge"]
    max_hours: float = Field(gt=0, allow_inf_nan=False)
    max_memory_bytes: int | None = Field(default=None, gt=0)
    licenses: tuple[str, ...] = ()
    experts: ExpertList | None = None
    open_data: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> SubmissionRules:
        if self.kind == "recipe" and (self.experts is not None or self.max_memory_bytes is not None):
            raise ValueError("a recipe submission has no expert list and no memory cap")
        if self.kind == "merge" and self.open_data:
            raise ValueError("a merge submission has no open-data list")
        if self.experts is not None and self.licenses:
            bad = [e.repo for e in self.experts.entries() if e.license not in self.licenses]
            if bad:
                raise ValueError(f"listed experts {bad} carry a licence outside {list(self.licenses)}")
        return self


class ModelConstraints(_Frozen):
    max_params: int = Field(gt=0)
    min_params: int = Field(default=0, ge=0)
    max_bytes: int = Field(gt=0)  # whole revision
    sequence_length: int = Field(gt=0)
    allowed_architectures: tuple[str, ...]
    tokenizer: str | None = None  # fixed tokenizer repo id, or None for the model's own
    load_dtype: str = "bfloat16"
    eval_block_delay: int = Field(default=0, ge=0)
    epsilon: EpsilonSpec
    norm_limits: NormLimits | None = None
    approved_families: tuple[str, ...] | None = None  # base model families (EFFICIENT_1GPU_1DAY)
    submission: SubmissionRules | None = None  # the manifest a submission must carry (SPEC §9)

    @model_validator(mode="after")
    def _range(self) -> ModelConstraints:
        if self.min_params > self.max_params:
            raise ValueError("min_params exceeds max_params")
        return self


class Aggregation(str, Enum):
    WIN_RATE = "win_rate"  # SPEC §5: weighted score, pairwise wins with epsilon
    HELM = "helm"  # product over tasks of per-task mean win rates (SPEC §9)


class Competition(_Frozen):
    id: int = Field(ge=0, le=255)
    name: str
    constraints: ModelConstraints
    tasks: tuple[EvalTaskSpec, ...]
    aggregation: Aggregation = Aggregation.WIN_RATE

    @model_validator(mode="after")
    def _tasks_valid(self) -> Competition:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"competition {self.name}: duplicate task names {names}")
        total = sum(t.weight for t in self.tasks)
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"competition {self.name}: task weights sum to {total}, not 1")
        return self

    def task(self, name: str) -> EvalTaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"competition {self.name} has no task {name!r}; tasks: {[t.name for t in self.tasks]}")


class CompetitionShare(_Frozen):
    competition: Competition
    reward_share: float = Field(gt=0, le=1)


class ScheduleEntry(_Frozen):
    """A period of the schedule: from `start_block`, these competitions, under this protocol.

    Each competition's `aggregation` must be the ranking its protocol's weight rules name
    (`WeightRules.ranking`): a HELM-ranked competition runs only under a HELM protocol.
    """

    start_block: int = Field(ge=0)
    protocol: ScoringProtocol
    competitions: tuple[CompetitionShare, ...]

    @model_validator(mode="after")
    def _shares(self) -> ScheduleEntry:
        ids = [c.competition.id for c in self.competitions]
        if len(set(ids)) != len(ids):
            raise ValueError(f"schedule entry at {self.start_block}: duplicate competition ids {ids}")
        total = sum(c.reward_share for c in self.competitions)
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"schedule entry at {self.start_block}: reward shares sum to {total}")
        ranking = self.protocol.weights.ranking
        wrong = [c.competition.name for c in self.competitions if c.competition.aggregation.value != ranking]
        if wrong:
            raise ValueError(f"schedule entry at {self.start_block}: protocol {self.protocol.name} ranks by "
                             f"{ranking}, but {wrong} do not")
        return self


class Schedule(_Frozen):
    """Start block -> competitions in force. The entry with the greatest start <= block rules."""

    entries: tuple[ScheduleEntry, ...]

    @model_validator(mode="after")
    def _ordered(self) -> Schedule:
        starts = [e.start_block for e in self.entries]
        if not starts or starts != sorted(set(starts)):
            raise ValueError(f"schedule start blocks must be unique and increasing: {starts}")
        return self

    def active_at(self, block: int) -> ScheduleEntry:
        """The entry in force at `block` (the first entry before the schedule starts)."""
        current = self.entries[0]
        for entry in self.entries:
            if entry.start_block <= block:
                current = entry
        return current

    def protocol_at(self, block: int) -> ScoringProtocol:
        """The scoring protocol in force at `block`."""
        return self.active_at(block).protocol

    def competition_at(self, competition_id: int, block: int) -> Competition | None:
        """The definition of a competition in force at `block`, or None if not active then."""
        for share in self.active_at(block).competitions:
            if share.competition.id == competition_id:
                return share.competition
        return None


__all__ = [
    "Aggregation",
    "Competition",
    "CompetitionShare",
    "EpsilonSpec",
    "EvalTaskSpec",
    "Expert",
    "ExpertList",
    "GenerationSpec",
    "Method",
    "ModelConstraints",
    "NormKind",
    "NormLimits",
    "Normalization",
    "Schedule",
    "ScheduleEntry",
    "SubmissionRules",
]
