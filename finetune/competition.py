"""The shape of a competition: constraints, eval tasks, schedule. Types only, no data.

The definitions themselves live in the top-level `competitions/` package; everything in
`finetune/` below the orchestration layer receives these records as arguments.
"""

from __future__ import annotations

import math
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    """A period of the schedule: from `start_block`, these competitions, under this protocol."""

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
    "GenerationSpec",
    "Method",
    "ModelConstraints",
    "NormKind",
    "NormLimits",
    "Normalization",
    "Schedule",
    "ScheduleEntry",
]
