"""One competition round: plan it (pure), execute it (score each model), fold it into state.

`plan_round` decides who is evaluated from the state alone; `execute_round` loads the round's
data once and scores every model in its isolated worker; `apply_round` turns the scores into
wins, smoothed weights, the keep-set and retries. The maths is in `finetune.scoring`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from constants import EMA_ALPHA, EVAL_HISTORY_LENGTH, KEEP_TOP_MODELS, WEIGHT_THRESHOLD
from finetune.competition import Aggregation, Competition, ScheduleEntry
from finetune.datasets import DataConfig
from finetune.eval import TaskData, prepare_task_data
from finetune.scoring import (
    EvalRecord as HistoryEntry,
)
from finetune.scoring import (
    compute_wins,
    ema_update,
    epsilon,
    helm_failed,
    helm_scores,
    models_to_keep,
    normalised_scores,
    should_retry,
    step_weights,
)
from finetune.scoring import subnet_weights as combine_competitions
from finetune.text import printable
from finetune.validator.state import EvalRecord, TrackedModel, ValidatorState
from finetune.validator.worker import WorkerOutcome

logger = logging.getLogger(__name__)


def task_fingerprint(competition: Competition) -> str:
    """Task names and versions: when they change, earlier results no longer compare."""
    return ",".join(f"{t.name}@{t.version}" for t in competition.tasks)


@dataclass(frozen=True)
class RoundPlan:
    competition: Competition
    window_block: int
    seed: int
    block_now: int
    hotkeys: tuple[str, ...]  # evaluated this round, in a stable order
    newly_updated: tuple[str, ...]
    copies: dict[str, str] = field(default_factory=dict)  # copy hotkey -> original hotkey
    sample_counts: dict[str, int] | None = None


@dataclass(frozen=True)
class ModelRoundResult:
    hotkey: str
    uid: int
    repo_id: str
    revision: str
    block: int
    score: float  # aggregate, lower is better; inf = failed
    win_rate: float
    epsilon_advantage: float  # the epsilon this model enjoys against later uploads
    tasks: dict[str, tuple[float, float]]  # task -> (raw, normalised)
    reason: str = ""


@dataclass(frozen=True)
class RoundResult:
    competition_id: int
    competition_name: str
    window_block: int
    seed: int
    block_now: int
    models: tuple[ModelRoundResult, ...]
    step_weights: dict[str, float]
    ema: dict[str, float]
    dropped_tasks: dict[str, str]

    def by_hotkey(self) -> dict[str, ModelRoundResult]:
        return {m.hotkey: m for m in self.models}


def find_copies(models: dict[str, TrackedModel]) -> dict[str, str]:
    """Identical content across hotkeys: only the earliest commitment competes (Ours, SPEC §3).

    Returns:
        copy hotkey -> hotkey of the original (earliest block, then lowest uid).
    """
    originals: dict[str, str] = {}
    copies: dict[str, str] = {}
    for hotkey, model in sorted(models.items(), key=lambda kv: (kv[1].block, kv[1].uid, kv[0])):
        if not model.content_hash:
            continue
        if model.content_hash in originals:
            copies[hotkey] = originals[model.content_hash]
        else:
            originals[model.content_hash] = hotkey
    return copies


def plan_round(
    state: ValidatorState,
    competition: Competition,
    *,
    window_block: int,
    seed: int,
    block_now: int,
    max_samples: int | None = None,
) -> RoundPlan:
    """Who is evaluated: the models kept from the last round plus those updated since."""
    comp = state.competition(competition.id)
    ready = {h: m for h, m in state.models.items() if m.status == "ready" and m.competition_id == competition.id}
    copies = find_copies(ready)
    wanted = [h for h in dict.fromkeys([*comp.keep, *comp.pending]) if h in ready and h not in copies]
    wanted.sort(key=lambda h: (ready[h].block, ready[h].uid))
    counts = {t.name: min(t.samples, max_samples) for t in competition.tasks} if max_samples else None
    return RoundPlan(
        competition=competition, window_block=window_block, seed=seed, block_now=block_now,
        hotkeys=tuple(wanted), newly_updated=tuple(h for h in comp.pending if h in wanted),
        copies=copies, sample_counts=counts,
    )


def _rank(plan: RoundPlan, outcomes: dict[str, WorkerOutcome], models: dict[str, TrackedModel], dropped):
    """(scores, win rates, failed) under the competition's aggregation."""
    competition = plan.competition
    scores = {h: o.total for h, o in outcomes.items()}
    failed = {h for h, s in scores.items() if not math.isfinite(s)}
    if competition.aggregation is Aggregation.HELM:
        raws = {h: {n: v["raw"] for n, v in o.tasks.items()} for h, o in outcomes.items()}
        return scores, helm_scores(raws, competition.tasks, dropped), failed | helm_failed(raws, competition.tasks, dropped)
    blocks = {h: models[h].block for h in outcomes}
    _, win_rate = compute_wins(scores, blocks, plan.block_now, competition.constraints.epsilon)
    return scores, win_rate, failed


def execute_round(
    plan: RoundPlan,
    state: ValidatorState,
    evaluate: Callable[[TrackedModel, TaskData], WorkerOutcome],
    task_data: TaskData,
) -> RoundResult:
    """Score every planned model on the round's data (loaded once), and rank them."""
    competition = plan.competition
    for name, why in task_data.dropped.items():
        logger.warning("%s: task %s dropped this round: %s", competition.name, name, why)
    models = {h: state.models[h] for h in plan.hotkeys}
    outcomes: dict[str, WorkerOutcome] = {}
    for index, hotkey in enumerate(plan.hotkeys, start=1):
        model = models[hotkey]
        logger.info("%s: evaluating %d/%d, uid %d %s@%s", competition.name, index, len(plan.hotkeys),
                    model.uid, printable(model.repo_id, 60), model.revision[:8])
        outcomes[hotkey] = evaluate(model, task_data)
        if not outcomes[hotkey].ok:
            logger.info("uid %d failed: %s %s", model.uid, printable(outcomes[hotkey].reason, 40),
                        printable(outcomes[hotkey].detail))
    dropped = dict(task_data.dropped)
    scores, win_rate, failed = _rank(plan, outcomes, models, dropped)
    step = step_weights(win_rate, failed)
    comp = state.competition(competition.id)
    ema = ema_update(comp.ema, step, alpha=EMA_ALPHA, live_uids=set(state.models))
    results = []
    for hotkey in plan.hotkeys:
        outcome, model = outcomes[hotkey], models[hotkey]
        raws = {n: v["raw"] for n, v in outcome.tasks.items()}
        normalised = normalised_scores(raws, competition.tasks, dropped)
        results.append(ModelRoundResult(
            hotkey=hotkey, uid=model.uid, repo_id=model.repo_id, revision=model.revision, block=model.block,
            score=scores[hotkey], win_rate=win_rate.get(hotkey, 0.0),
            epsilon_advantage=epsilon(competition.constraints.epsilon, plan.block_now, model.block),
            tasks={n: (raws.get(n, math.inf), normalised.get(n, math.inf)) for n in normalised},
            reason="" if outcome.ok else printable(f"{outcome.reason}: {outcome.detail}", 120),
        ))
    return RoundResult(
        competition_id=competition.id, competition_name=competition.name, window_block=plan.window_block,
        seed=plan.seed, block_now=plan.block_now, models=tuple(results), step_weights=step, ema=ema,
        dropped_tasks=dropped,
    )


def load_round_data(plan: RoundPlan, data_config: DataConfig) -> TaskData:
    """The round's samples, the same for every model (and every validator: seeded)."""
    return prepare_task_data(plan.competition, seed=plan.seed, config=data_config, sample_counts=plan.sample_counts)


def _retries(state: ValidatorState, plan: RoundPlan, result: RoundResult, keep: set[str]) -> list[str]:
    """Ready models outside the keep-set that the retry rule sends back in (SPEC §5)."""
    comp = state.competition(plan.competition.id)
    by_hotkey = result.by_hotkey()
    finite = [m for m in result.models if math.isfinite(m.score)]
    winner = max(finite, key=lambda m: (result.ema.get(m.hotkey, 0.0), m.win_rate, -m.block), default=None)
    fingerprint = task_fingerprint(plan.competition)
    retry = []
    for hotkey in by_hotkey:
        if hotkey in keep:
            continue
        # Only this revision's records: a new upload gets its own retry, and an old upload's
        # score says nothing about it.
        revision = by_hotkey[hotkey].revision
        history = [HistoryEntry(block=r.window_block, score=r.score, fingerprint=r.fingerprint)
                   for r in comp.history.get(hotkey, []) if r.revision == revision]
        again = should_retry(
            history, model_block=by_hotkey[hotkey].block,
            winner_score=winner.score if winner else math.inf, winner_block=winner.block if winner else 0,
            block_now=plan.block_now, epsilon_spec=plan.competition.constraints.epsilon, fingerprint=fingerprint,
        )
        if again:
            retry.append(hotkey)
    return retry


def apply_round(state: ValidatorState, plan: RoundPlan, result: RoundResult) -> None:
    """Fold a finished round into the state (the only place a round mutates state)."""
    comp = state.competition(plan.competition.id)
    fingerprint = task_fingerprint(plan.competition)
    for model in result.models:
        state.record_eval(plan.competition.id, model.hotkey, EvalRecord(
            window_block=plan.window_block, revision=model.revision, score=model.score,
            win_rate=model.win_rate, tasks={n: raw for n, (raw, _) in model.tasks.items()},
            fingerprint=fingerprint, reason=model.reason,
        ), keep_last=EVAL_HISTORY_LENGTH)
    comp.ema = dict(result.ema)
    win_rate = {m.hotkey: m.win_rate for m in result.models}
    keep = models_to_keep(comp.ema, win_rate, k=KEEP_TOP_MODELS)
    keep = {h for h in keep if h in state.models and state.models[h].status == "ready"}
    comp.keep = sorted(keep)
    comp.pending = _retries(state, plan, result, keep)
    comp.last_window = plan.window_block
    for copy, original in plan.copies.items():
        model = state.models[copy]
        state.models[copy] = model.model_copy(update={
            "status": "rejected", "reason": "copy",
            "detail": f"same content as uid {state.models[original].uid}, committed earlier",
        })


def subnet_weights(state: ValidatorState, entry: ScheduleEntry) -> dict[str, float]:
    """hotkey -> weight over the competitions in force (threshold, shares; SPEC §5)."""
    shares = {share.competition.id: share.reward_share for share in entry.competitions}
    per_competition = {cid: state.competition(cid).ema for cid in shares}
    return combine_competitions(per_competition, shares, threshold=WEIGHT_THRESHOLD)
