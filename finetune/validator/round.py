"""One competition round: plan it (pure), execute it (score each model), fold it into state.

`plan_round` decides who is evaluated from the state alone; `execute_round` loads the round's
data once and scores every model in its isolated worker; `apply_round` turns the scores into
wins, smoothed weights, the keep-set and retries. The maths is in `finetune.scoring`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from constants import EMA_ALPHA, EVAL_HISTORY_LENGTH, KEEP_TOP_MODELS, WEIGHT_THRESHOLD
from finetune.competition import Aggregation, Competition, ScheduleEntry
from finetune.datasets import DataConfig
from finetune.errors import DataUnavailable
from finetune.eval import TaskData, prepare_task_data
from finetune.protocol import NEXT, ScoringProtocol, WeightRules
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
    task_win_rates,
)
from finetune.scoring import subnet_weights as combine_competitions
from finetune.scoring.aggregate import reference_score
from finetune.scoring.history import should_retry_reference
from finetune.scoring.tracker import (
    chain_weights,
    evaluation_order,
    record_step,
    reference_keep,
    reference_step_weights,
)
from finetune.scoring.wins import competitive_models
from finetune.text import printable
from finetune.validator.state import (
    ROUNDS_KEPT,
    EvalRecord,
    RoundSummary,
    TrackedModel,
    ValidatorState,
)
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
    hotkeys: tuple[str, ...]  # evaluated this round, in evaluation order (it decides ties)
    newly_updated: tuple[str, ...]
    copies: dict[str, str] = field(default_factory=dict)  # copy hotkey -> original hotkey
    sample_counts: dict[str, int] | None = None
    protocol: ScoringProtocol = NEXT
    uids: Mapping[str, int] = field(default_factory=dict)  # hotkey -> uid in the metagraph now
    metagraph_size: int = 0


@dataclass(frozen=True)
class ModelRoundResult:
    hotkey: str
    uid: int
    repo_id: str
    revision: str
    block: int
    score: float  # aggregate, lower is better; inf = failed (NaN: see WeightRules.scores)
    win_rate: float
    epsilon_advantage: float  # the epsilon this model enjoys against later uploads
    tasks: dict[str, tuple[float, float]]  # task -> (raw, normalised)
    reason: str = ""
    task_failures: dict[str, str] = field(default_factory=dict)  # task -> why it gave no score
    # HELM ranking (SPEC §9): task -> this model's mean win rate there; `win_rate` is their product.
    task_win_rates: dict[str, float] = field(default_factory=dict)
    # The seeds' competitions: what its checked submission.json declared (merge seconds, peak
    # memory, a recipe's base), from `TrackedModel.submission`.
    submission: dict[str, str | float] = field(default_factory=dict)


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
    winner: str = ""  # hotkey of the round's winner (first at the best win rate), "" if none
    deferred: tuple[str, ...] = ()  # not scored for the validator's own failure: pending again
    ranking: str = "win_rate"  # the competition's aggregation: "helm" ranks by HELM score

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
    protocol: ScoringProtocol = NEXT,
    uids: Mapping[str, int] | None = None,
    metagraph_size: int = 0,
) -> RoundPlan:
    """Who is evaluated: the models kept from the last round plus those updated since.

    Args:
        uids: hotkey -> uid of the current metagraph (default: the uids the state recorded).
        metagraph_size: number of uids (the reference's tracker keeps one entry per uid).
    """
    comp = state.competition(competition.id)
    ready = {h: m for h, m in state.models.items() if m.status == "ready" and m.competition_id == competition.id}
    copies = find_copies(ready) if protocol.weights.copies == "earliest" else {}
    pending = [h for h in comp.pending if h in ready and h not in copies]
    limit = protocol.weights.updated_models_limit
    if limit is not None:  # the rest stay pending for a later round, in arrival order
        kept_everywhere = sum(len(c.keep) for c in state.competitions.values())
        pending = pending[: max(limit - kept_everywhere, 0)]
    wanted = [h for h in dict.fromkeys([*comp.keep, *pending]) if h in ready and h not in copies]
    if protocol.weights.keep == "reference":
        # The reference lists its set of kept uids updated with the pending ones: that order
        # decides ties of the win rate (the winner, the keep-set).
        by_uid = {ready[h].uid: h for h in wanted}
        kept = [ready[h].uid for h in comp.keep if h in by_uid.values()]
        pending = [ready[h].uid for h in comp.pending if h in by_uid.values()]
        wanted = [by_uid[u] for u in evaluation_order(kept, pending)]
    else:
        wanted.sort(key=lambda h: (ready[h].block, ready[h].uid))
    counts = {t.name: min(t.samples, max_samples) for t in competition.tasks} if max_samples else None
    uid_of = dict(uids) if uids is not None else {h: m.uid for h, m in state.models.items()}
    return RoundPlan(
        competition=competition, window_block=window_block, seed=seed, block_now=block_now,
        hotkeys=tuple(wanted), newly_updated=tuple(h for h in pending if h in wanted),
        copies=copies, sample_counts=counts, protocol=protocol, uids=uid_of,
        metagraph_size=max(metagraph_size, max(uid_of.values(), default=-1) + 1),
    )


def _score(outcome: WorkerOutcome, competition: Competition, dropped: Mapping[str, str], rules: WeightRules) -> float:
    if rules.scores == "ours":
        return outcome.total
    # The reference sums the task scores itself; a model whose scoring raised has none (inf).
    raws = {n: v["raw"] for n, v in outcome.tasks.items() if "raw" in v}
    if not outcome.ok and outcome.reason not in ("nan", "non_finite"):
        return math.inf
    return reference_score(raws, competition.tasks, dropped)


def _rank(plan: RoundPlan, outcomes: dict[str, WorkerOutcome], models: dict[str, TrackedModel], dropped):
    """(scores, win rates, failed) under the competition's aggregation and the protocol."""
    competition, rules = plan.competition, plan.protocol.weights
    scores = {h: _score(o, competition, dropped, rules) for h, o in outcomes.items()}
    failed = {h for h, s in scores.items() if not math.isfinite(s)}
    if competition.aggregation is Aggregation.HELM:
        raws = {h: {n: v["raw"] for n, v in o.tasks.items()} for h, o in outcomes.items()}
        return scores, helm_scores(raws, competition.tasks, dropped), failed | helm_failed(raws, competition.tasks, dropped)
    blocks = {h: models[h].block for h in outcomes}
    spec = competition.constraints.epsilon
    ranked = scores
    if rules.clones == "drop":  # clones and non-improvements never enter the win rates
        keep = competitive_models(scores, blocks, spec)
        ranked = {h: s for h, s in scores.items() if h in keep}
        failed |= set(scores) - keep
    _, win_rate = compute_wins(ranked, blocks, plan.block_now, spec, nan_ties=rules.scores == "reference")
    return scores, {h: win_rate.get(h, 0.0) for h in scores}, failed


def _task_win_rates(competition: Competition, outcomes: Mapping[str, WorkerOutcome],
                    dropped: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """HELM only: hotkey -> task -> mean win rate on that task (what the HELM score multiplies)."""
    if competition.aggregation is not Aggregation.HELM:
        return {}
    raws = {h: {n: v["raw"] for n, v in o.tasks.items()} for h, o in outcomes.items()}
    per_task = {t.name: task_win_rates(raws, t.name) for t in competition.tasks if t.name not in dropped}
    return {h: {name: rates[h] for name, rates in per_task.items()} for h in outcomes}


NOT_COMPETITIVE = "not_competitive: cannot beat an earlier model even once its advantage has decayed"
# Failures that are the validator's own (no worker process could start): such a model is not
# part of the round at all, nothing is recorded against it, and it is evaluated next round.
VALIDATOR_FAILURES = frozenset({"worker_unavailable"})


def _smooth(plan: RoundPlan, previous: Mapping[str, float], step: Mapping[str, float]) -> dict[str, float]:
    """The competition's new smoothed weights, by hotkey, under the protocol's smoothing."""
    if plan.protocol.weights.smoothing == "ours":
        return ema_update(previous, step, alpha=EMA_ALPHA, live_uids=set(plan.uids))
    by_uid = {plan.uids[h]: w for h, w in previous.items() if h in plan.uids}
    step_by_uid = {plan.uids[h]: w for h, w in step.items()}
    smoothed = record_step(by_uid or None, step_by_uid, alpha=EMA_ALPHA, size=plan.metagraph_size)
    hotkey_of = {uid: h for h, uid in plan.uids.items()}
    return {hotkey_of[uid]: w for uid, w in smoothed.items() if uid in hotkey_of}


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
    deferred = tuple(h for h, o in outcomes.items() if o.reason in VALIDATOR_FAILURES)
    for hotkey in deferred:
        logger.warning("uid %d not scored this round (the validator's failure: %s); it stays pending",
                       models[hotkey].uid, outcomes.pop(hotkey).detail)
    dropped = dict(task_data.dropped)
    scores, win_rate, failed = _rank(plan, outcomes, models, dropped)
    rules = plan.protocol.weights
    step = reference_step_weights(win_rate) if rules.all_failed == "share" else step_weights(win_rate, failed)
    winner = max(win_rate, key=win_rate.get) if win_rate else ""
    ema = _smooth(plan, state.competition(competition.id).ema, step)
    per_task = _task_win_rates(competition, outcomes, dropped)
    results = []
    for hotkey in (h for h in plan.hotkeys if h in outcomes):
        outcome, model = outcomes[hotkey], models[hotkey]
        raws = {n: v["raw"] for n, v in outcome.tasks.items()}
        normalised = normalised_scores(raws, competition.tasks, dropped)
        results.append(ModelRoundResult(
            hotkey=hotkey, uid=model.uid, repo_id=model.repo_id, revision=model.revision, block=model.block,
            score=scores[hotkey], win_rate=win_rate.get(hotkey, 0.0),
            epsilon_advantage=epsilon(competition.constraints.epsilon, plan.block_now, model.block),
            tasks={n: (raws.get(n, math.inf), normalised.get(n, math.inf)) for n in normalised},
            reason=(printable(f"{outcome.reason}: {outcome.detail}", 120) if not outcome.ok
                    else NOT_COMPETITIVE if hotkey in failed else ""),
            task_failures={n: printable(v["failure"], 200) for n, v in outcome.tasks.items()
                           if n in normalised and v.get("failure")},
            task_win_rates=per_task.get(hotkey, {}), submission=dict(model.submission),
        ))
    return RoundResult(
        competition_id=competition.id, competition_name=competition.name, window_block=plan.window_block,
        seed=plan.seed, block_now=plan.block_now, models=tuple(results), step_weights=step, ema=ema,
        dropped_tasks=dropped, winner=winner, deferred=deferred, ranking=competition.aggregation.value,
    )


def load_round_data(plan: RoundPlan, data_config: DataConfig) -> TaskData:
    """The round's samples, the same for every model (and every validator: seeded).

    Raises:
        DataUnavailable: no task has data (the round is not run, and nothing is recorded
            against any miner), or, under the reference's draws, a task's data failed with an HTTP error
            other than a rate limit; the reference abandons the whole round then (and tries
            again at its next step), so a validator that agrees with it must too.
    """
    data = prepare_task_data(plan.competition, seed=plan.seed, config=data_config,
                             sample_counts=plan.sample_counts, rules=plan.protocol.data)
    if plan.protocol.data.draws == "reference":
        failed = {name: why for name, why in data.dropped.items() if why.startswith("http_error")}
        if failed:
            raise DataUnavailable(f"round abandoned as the reference does: {failed}", reason="http_error")
    if not data.samples:  # the validator's data problem: scoring nobody, recording nothing
        raise DataUnavailable(f"no task of {plan.competition.name} has data this round: {dict(data.dropped)}")
    return data


def _retries(state: ValidatorState, plan: RoundPlan, result: RoundResult, keep: set[str]) -> list[str]:
    """Ready models outside the keep-set that the retry rule sends back in (SPEC §5)."""
    comp = state.competition(plan.competition.id)
    by_hotkey = result.by_hotkey()
    finite = [m for m in result.models if math.isfinite(m.score)]
    winner = max(finite, key=lambda m: (result.ema.get(m.hotkey, 0.0), m.win_rate, -m.block), default=None)
    fingerprint = task_fingerprint(plan.competition)
    spec = plan.competition.constraints.epsilon
    retry = []
    for hotkey in by_hotkey:
        if hotkey in keep:
            continue
        # Only this revision's records: a new upload gets its own retry, and an old upload's
        # score says nothing about it.
        revision = by_hotkey[hotkey].revision
        history = [HistoryEntry(block=r.window_block, score=r.score, fingerprint=r.fingerprint,
                                winner_block=r.winner_block, winner_score=r.winner_score)
                   for r in comp.history.get(hotkey, []) if r.revision == revision]
        if plan.protocol.weights.retry == "reference":
            again = should_retry_reference(history, block_now=plan.block_now, epsilon_spec=spec)
        else:
            again = should_retry(
                history, model_block=by_hotkey[hotkey].block,
                winner_score=winner.score if winner else math.inf, winner_block=winner.block if winner else 0,
                block_now=plan.block_now, epsilon_spec=spec, fingerprint=fingerprint,
            )
        if again:
            retry.append(hotkey)
    return retry


def _keep(plan: RoundPlan, state: ValidatorState, result: RoundResult, smoothed: Mapping[str, float]) -> list[str]:
    win_rate = {m.hotkey: m.win_rate for m in result.models}  # evaluation order
    if plan.protocol.weights.keep == "reference":
        keep = reference_keep(win_rate, smoothed, k=KEEP_TOP_MODELS)
    else:
        keep = sorted(models_to_keep(smoothed, win_rate, k=KEEP_TOP_MODELS))
    return [h for h in keep if h in state.models and state.models[h].status == "ready"]


def apply_round(
    state: ValidatorState, plan: RoundPlan, result: RoundResult, entry: ScheduleEntry | None = None
) -> dict[str, float] | None:
    """Fold a finished round into the state (the only place a round mutates state).

    With the schedule `entry` in force, also compute the chain weights as the round leaves
    them (the reference's tracker renormalises the stored smoothed weights while doing so,
    before it chooses the models to keep) and return them.
    """
    comp = state.competition(plan.competition.id)
    fingerprint = task_fingerprint(plan.competition)
    winner = result.by_hotkey().get(result.winner)
    for model in result.models:
        state.record_eval(plan.competition.id, model.hotkey, EvalRecord(
            window_block=plan.window_block, revision=model.revision, score=model.score,
            win_rate=model.win_rate, tasks={n: raw for n, (raw, _) in model.tasks.items()},
            task_failures=dict(model.task_failures), fingerprint=fingerprint, reason=model.reason,
            winner_block=winner.block if winner else 0, winner_score=winner.score if winner else math.inf,
        ), keep_last=EVAL_HISTORY_LENGTH)
    comp.ema = dict(result.ema)
    weights = subnet_weights(state, entry, uids=plan.uids, size=plan.metagraph_size) if entry else None
    keep = _keep(plan, state, result, comp.ema)
    comp.keep = keep
    # Updated models this round left out (the protocol's limit) wait for the next one.
    waiting = [h for h in comp.pending if h not in plan.hotkeys and h not in plan.copies
               and h in state.models and state.models[h].status == "ready"]
    carried = [*_retries(state, plan, result, set(keep)), *result.deferred, *waiting]
    comp.pending = [h for h in dict.fromkeys(carried) if h not in keep]
    comp.last_window = plan.window_block
    comp.rounds.append(RoundSummary(
        window_block=plan.window_block, block=plan.block_now, seed=plan.seed, finished_at=time.time(),
        winner=result.winner, scores={m.hotkey: m.score for m in result.models}, weights=dict(comp.ema),
    ))
    del comp.rounds[:-ROUNDS_KEPT]
    for copy, original in plan.copies.items():
        model = state.models[copy]
        state.models[copy] = model.model_copy(update={
            "status": "rejected", "reason": "copy",
            "detail": f"same content as uid {state.models[original].uid}, committed earlier",
        })
    return weights


def subnet_weights(
    state: ValidatorState,
    entry: ScheduleEntry,
    *,
    uids: Mapping[str, int] | None = None,
    size: int = 0,
    threshold: float = WEIGHT_THRESHOLD,
) -> dict[str, float]:
    """hotkey -> weight over the competitions in force (threshold, shares; SPEC §5).

    Under the reference's smoothing this also renormalises the stored smoothed weights of
    the active competitions, as its tracker does (with a threshold).
    """
    shares = [(share.competition.id, share.reward_share) for share in entry.competitions]
    if entry.protocol.weights.smoothing == "ours":
        per_competition = {cid: state.competition(cid).ema for cid, _ in shares}
        return combine_competitions(per_competition, dict(shares), threshold=threshold)
    uid_of = dict(uids) if uids is not None else {h: m.uid for h, m in state.models.items()}
    hotkey_of = {uid: h for h, uid in uid_of.items()}
    smoothed = {cid: {uid_of[h]: w for h, w in state.competitions[str(cid)].ema.items() if h in uid_of}
                for cid, _ in shares if state.competitions.get(str(cid)) and state.competitions[str(cid)].ema}
    size = max(size, max(hotkey_of, default=-1) + 1)
    weights, stored = chain_weights(smoothed, shares, threshold=threshold, size=size)
    for cid, by_uid in stored.items():
        state.competition(cid).ema = {hotkey_of[u]: w for u, w in by_uid.items() if u in hotkey_of}
    return {hotkey_of[u]: w for u, w in weights.items() if u in hotkey_of}
