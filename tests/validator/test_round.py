import json
import math

import pytest

from finetune.competition import (
    Competition,
    EpsilonSpec,
    EvalTaskSpec,
    Method,
    ModelConstraints,
)
from finetune.eval import TaskData
from finetune.validator.round import apply_round, execute_round, find_copies, plan_round
from finetune.validator.state import TrackedModel, ValidatorState
from finetune.validator.worker import WorkerOutcome

COMP = Competition(
    id=7,
    name="T",
    constraints=ModelConstraints(
        max_params=10**6, max_bytes=10**8, sequence_length=64, allowed_architectures=("LlamaForCausalLM",),
        epsilon=EpsilonSpec(start=0.05, end=0.01, decay_blocks=100),
    ),
    tasks=(EvalTaskSpec(name="loss", method=Method.TEXT_LOSS, dataset="fineweb", weight=1.0, samples=4),),
)


def _model(hotkey, uid, block, content, status="ready"):
    return TrackedModel(hotkey=hotkey, uid=uid, commitment=f"c{uid}", repo_id=f"ns/m{uid}", revision="a" * 40,
                        competition_id=7, block=block, content_hash=content, status=status, local_path=f"/m/{uid}")


def _state(*models, pending=None):
    state = ValidatorState()
    for m in models:
        state.models[m.hotkey] = m
    state.competition(7).pending = list(pending if pending is not None else [m.hotkey for m in models])
    return state


def _evaluator(scores):
    def evaluate(model, task_data):
        score = scores[model.hotkey]
        if math.isinf(score):
            return WorkerOutcome(False, math.inf, reason="crashed", detail="boom")
        return WorkerOutcome(True, score, {"loss": {"raw": score, "normalized": score, "weighted": score, "samples": 4}})
    return evaluate


def _round(state, scores, block_now=1000, window=900):
    plan = plan_round(state, COMP, window_block=window, seed=1, block_now=block_now)
    result = execute_round(plan, state, _evaluator(scores), TaskData(seed=1))
    apply_round(state, plan, result)
    return plan, result


def test_copies_lose_to_the_earliest_commitment():
    models = {m.hotkey: m for m in [_model("a", 1, 10, "X"), _model("b", 2, 5, "X"), _model("c", 3, 20, "Y")]}
    assert find_copies(models) == {"a": "b"}


def test_plan_takes_keep_and_pending_without_copies_in_block_order():
    state = _state(_model("a", 1, 30, "X"), _model("b", 2, 10, "Y"), _model("c", 3, 20, "X"),
                   _model("d", 4, 5, "Z", status="rejected"))
    plan = plan_round(state, COMP, window_block=900, seed=1, block_now=1000)
    assert plan.hotkeys == ("b", "c")
    assert plan.copies == {"a": "c"}


def test_earlier_model_wins_within_epsilon_and_copy_is_rejected():
    # b is earlier (block 10, epsilon decayed to 0.01); a is 0.5% better -> b still wins, and
    # a, which could never beat b, does not even enter the win rates.
    state = _state(_model("a", 1, 900, "X"), _model("b", 2, 10, "Y"), _model("c", 3, 950, "Y"))
    _, result = _round(state, {"a": 0.995, "b": 1.0})  # b: 1.0 * (1 - 0.01) = 0.99 < 0.995
    rates = {m.hotkey: m.win_rate for m in result.models}
    assert rates == {"b": 0.0, "a": 0.0}
    assert result.step_weights == {"b": 1.0, "a": 0.0}
    assert result.by_hotkey()["a"].reason.startswith("not_competitive")
    assert result.ema == pytest.approx({"b": 0.1})
    assert state.models["c"].status == "rejected" and state.models["c"].reason == "copy"
    assert state.competition(7).last_window == 900


def test_clearly_better_later_model_wins():
    state = _state(_model("a", 1, 900, "X"), _model("b", 2, 10, "Y"))
    _, result = _round(state, {"a": 0.5, "b": 1.0})
    assert result.step_weights == {"a": 1.0, "b": 0.0}


def test_lone_model_takes_the_step():
    state = _state(_model("a", 1, 10, "X"))
    _, result = _round(state, {"a": 2.0})
    assert result.models[0].win_rate == 0.0
    assert result.step_weights == {"a": 1.0}


def test_all_models_failing_gives_nobody_weight():
    state = _state(_model("a", 1, 10, "X"), _model("b", 2, 20, "Y"))
    state.competition(7).ema = {"a": 0.5}
    _, result = _round(state, {"a": math.inf, "b": math.inf})
    assert result.step_weights == {"a": 0.0, "b": 0.0}
    assert result.ema == pytest.approx({"a": 0.45})
    assert all(m.reason.startswith("crashed") for m in result.models)


def test_failed_model_gets_one_retry_then_none():
    state = _state(_model("a", 1, 10, "X"), _model("b", 2, 20, "Y"), _model("c", 3, 30, "Z"),
                   _model("d", 4, 40, "W"), _model("e", 5, 50, "V"))
    scores = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4, "e": math.inf}
    _round(state, scores)
    comp = state.competition(7)
    assert comp.keep == ["a", "b", "c"]
    assert comp.pending == ["e"]  # failed once: one retry; d lost fairly: no retry
    _round(state, scores, window=1260, block_now=1300)
    assert "e" not in state.competition(7).pending


def test_history_is_recorded_and_bounded():
    state = _state(_model("a", 1, 10, "X"))
    for window in (900, 1260, 1620, 1980):
        state.competition(7).pending = ["a"]
        _round(state, {"a": 1.0}, window=window, block_now=window + 10)
    history = state.competition(7).history["a"]
    assert [r.window_block for r in history] == [1260, 1620, 1980]


def test_helm_competition_ranks_by_product_of_task_win_rates():
    from finetune.competition import Aggregation

    helm = COMP.model_copy(update={
        "aggregation": Aggregation.HELM,
        "tasks": (
            EvalTaskSpec(name="t1", method=Method.TEXT_LOSS, dataset="fineweb", weight=0.5, samples=4),
            EvalTaskSpec(name="t2", method=Method.TEXT_LOSS, dataset="fineweb", weight=0.5, samples=4),
        ),
    })
    raws = {"a": (1.0, 3.0), "b": (2.0, 1.0), "c": (3.0, 2.0)}

    def evaluate(model, task_data):
        t1, t2 = raws[model.hotkey]
        return WorkerOutcome(True, t1 + t2, {"t1": {"raw": t1}, "t2": {"raw": t2}})

    state = _state(_model("a", 1, 10, "X"), _model("b", 2, 20, "Y"), _model("c", 3, 30, "Z"))
    plan = plan_round(state, helm, window_block=900, seed=1, block_now=1000)
    result = execute_round(plan, state, evaluate, TaskData(seed=1))
    # Mean win rates: a (1, 0), b (1/2, 1), c (0, 1/2); products: a 0, b 1/2, c 0.
    assert {m.hotkey: m.win_rate for m in result.models} == {"a": 0.0, "b": 0.5, "c": 0.0}
    assert result.step_weights == {"a": 0.0, "b": 1.0, "c": 0.0}
    # The result carries why: each task's mean win rate (what the HELM score multiplies).
    assert result.ranking == "helm" and result.winner == "b"
    assert {m.hotkey: m.task_win_rates for m in result.models} == {
        "a": {"t1": 1.0, "t2": 0.0}, "b": {"t1": 0.5, "t2": 1.0}, "c": {"t1": 0.0, "t2": 0.5}}
    from finetune.validator.report import round_json, round_lines, round_table

    lines = "\n".join(round_lines(result))
    assert "helm 0.5000" in lines and "t2=1.0000/1.0000/wr1.000" in lines
    assert all(json.loads(line)["ranking"] == "helm" for line in round_json(result))
    table = round_table(result)
    assert "HELM" in [str(c.header) for c in table.columns] and "eps adv" not in [str(c.header) for c in table.columns]


def test_a_merge_round_shows_each_models_declared_time_and_memory():
    from rich.console import Console

    from finetune.validator.report import round_table

    state = _state(_model("a", 1, 10, "X"))
    state.models["a"] = state.models["a"].model_copy(update={"submission": {
        "kind": "merge", "method": "ties", "merge_seconds": 1.5, "total_seconds": 3.0,
        "peak_memory_bytes": float(512 * 2**20), "recalibration": "[red]boolq"}})
    _, result = _round(state, {"a": 1.0})
    assert result.models[0].submission["method"] == "ties"
    console = Console(record=True, width=300)
    console.print(round_table(result))
    text = console.export_text()
    assert "ties 3.0s 512 MiB +recal [red]boolq" in text  # miner text shown as written, never markup


def test_new_revision_gets_its_own_retry_whatever_the_old_one_did():
    state = _state(_model("a", 1, 10, "X"), _model("b", 2, 20, "Y"), _model("c", 3, 30, "Z"),
                   _model("e", 5, 50, "V"))
    scores = {"a": 0.1, "b": 0.2, "c": 0.3, "e": math.inf}
    _round(state, scores)
    _round(state, scores, window=1260, block_now=1300)
    assert "e" not in state.competition(7).pending  # the old revision used its one retry
    # The miner uploads a new revision, which fails once: it gets a retry of its own.
    state.models["e"] = state.models["e"].model_copy(update={"revision": "b" * 40, "content_hash": "W"})
    state.competition(7).pending.append("e")
    _round(state, scores, window=1620, block_now=1700)
    assert "e" in state.competition(7).pending


# ---- protocol reference-3.1: the reference's rules from scores to weights -------------------


def _reference_round(state, scores, block_now=1000, window=900):
    from finetune.competition import CompetitionShare, ScheduleEntry
    from finetune.protocol import REFERENCE_31

    entry = ScheduleEntry(start_block=0, protocol=REFERENCE_31,
                          competitions=(CompetitionShare(competition=COMP, reward_share=1.0),))
    plan = plan_round(state, COMP, window_block=window, seed=1, block_now=block_now, protocol=REFERENCE_31)
    result = execute_round(plan, state, _evaluator(scores), TaskData(seed=1))
    weights = apply_round(state, plan, result, entry)
    return plan, result, weights


def test_reference_first_round_is_undamped_and_copies_compete():
    state = _state(_model("a", 1, 900, "X"), _model("b", 2, 10, "Y"), _model("c", 3, 950, "Y"))
    _, result, weights = _reference_round(state, {"a": 0.5, "b": 1.0, "c": 1.0})
    assert result.ema == {"a": 1.0, "b": 0.0, "c": 0.0}  # the first step is the smoothed weights
    assert weights == {"a": 1.0}
    assert state.models["c"].status == "ready"  # identical content is not rejected as a copy
    _, result, weights = _reference_round(state, {"a": 1.0, "b": 0.5, "c": 1.0}, window=1260, block_now=1300)
    assert result.ema == pytest.approx({"a": 0.9, "b": 0.1, "c": 0.0})
    assert weights == {"a": 1.0}  # b's 0.1 is under the 0.18 threshold


def test_reference_all_failed_round_shares_the_step():
    state = _state(_model("a", 1, 10, "X"), _model("b", 2, 20, "Y"))
    _, result, weights = _reference_round(state, {"a": math.inf, "b": math.inf})
    assert result.step_weights == {"a": 1.0, "b": 1.0}
    assert weights == {"a": 0.5, "b": 0.5}


def test_reference_nan_score_ties_with_everyone():
    state = _state(_model("a", 1, 10, "X"), _model("b", 2, 20, "Y"))
    _, result, _ = _reference_round(state, {"a": math.nan, "b": 2.0})
    assert {m.hotkey: m.win_rate for m in result.models} == {"a": 0.0, "b": 0.0}
    assert result.step_weights == {"a": 1.0, "b": 1.0}


def test_reference_weights_follow_the_uid_to_a_new_hotkey():
    state = _state(_model("a", 1, 10, "X"), _model("b", 2, 20, "Y"))
    _reference_round(state, {"a": 0.5, "b": 1.0})
    dropped = state.realign(["b", "z"], successors={"a": "z"})  # uid 1 now belongs to z
    assert dropped == ["a"]
    assert state.competition(7).ema["z"] == 1.0


def test_fresh_clones_of_the_leader_cannot_shield_it_from_a_better_newcomer():
    # The leader L's advantage has decayed (block 10); three fresh clones (new content hashes,
    # same scores) carry the full 5 %. Newcomer N is 3 % better than L: it beats L, but each
    # clone's 5 % beats N. Under the reference's rules the clones win and L keeps its place;
    # under ours (next) they are left out, N beats L and takes the step.
    models = [_model("L", 1, 10, "L"), _model("N", 2, 990, "N")]
    models += [_model(f"c{i}", 3 + i, 980, f"C{i}") for i in range(3)]
    scores = {"L": 1.0, "N": 0.97, "c0": 1.0, "c1": 1.0, "c2": 1.0}
    _, result = _round(_state(*models), scores)
    assert result.step_weights["N"] == 1.0
    assert all(result.by_hotkey()[f"c{i}"].reason.startswith("not_competitive") for i in range(3))
    _, reference, _ = _reference_round(_state(*models), scores)
    assert reference.step_weights["N"] == 0.0


def test_round_summaries_keep_a_bounded_score_history():
    from finetune.validator.state import ROUNDS_KEPT

    state = _state(_model("a", 1, 10, "X"), _model("b", 2, 20, "Y"))
    for i in range(ROUNDS_KEPT + 5):
        state.competition(7).pending = ["a", "b"]
        _round(state, {"a": 1.0 + i, "b": 2.0}, window=900 + 360 * i, block_now=1000 + 360 * i)
    rounds = state.competition(7).rounds
    assert len(rounds) == ROUNDS_KEPT
    assert rounds[-1].scores == {"a": 1.0 + ROUNDS_KEPT + 4, "b": 2.0}
    assert rounds[-1].winner == "b"


def test_a_model_the_validator_could_not_score_is_not_charged_and_stays_pending():
    state = _state(_model("a", 1, 10, "X"), _model("b", 2, 20, "Y"))

    def evaluate(model, task_data):
        if model.hotkey == "b":  # no worker process could start: the validator's problem
            return WorkerOutcome(False, math.inf, reason="worker_unavailable", detail="fork failed")
        return WorkerOutcome(True, 1.0, {"loss": {"raw": 1.0}})

    plan = plan_round(state, COMP, window_block=900, seed=1, block_now=1000)
    result = execute_round(plan, state, evaluate, TaskData(seed=1))
    apply_round(state, plan, result)
    assert [m.hotkey for m in result.models] == ["a"] and result.deferred == ("b",)
    assert "b" not in state.competition(7).history  # nothing recorded against its miner
    assert "b" in state.competition(7).pending


def test_reference_admits_at_most_sixteen_updated_models_the_rest_wait():
    models = [_model(f"m{i:02d}", i, 10 + i, f"C{i}") for i in range(20)]
    state = _state(*models)
    plan, result, _ = _reference_round(state, {m.hotkey: 1.0 + m.uid for m in models})
    assert len(plan.hotkeys) == 16  # the reference's updated_models_limit, nothing kept yet
    waiting = set(state.competition(7).pending)
    assert {f"m{i:02d}" for i in range(16, 20)} <= waiting  # left for a later round
    plan, _, _ = _reference_round(state, {m.hotkey: 1.0 + m.uid for m in models}, window=1260, block_now=1300)
    assert {f"m{i:02d}" for i in range(16, 20)} <= set(plan.hotkeys)


# --- a task that gives no score ----------------------------------------------------------------

CAPPED = EvalTaskSpec(name="FINEWEB", method=Method.TEXT_LOSS, dataset="fineweb", weight=0.5, samples=4,
                      normalization={"kind": "inverse_exponential", "ceiling": 20.0})
UNCAPPED = EvalTaskSpec(name="REF", method=Method.REFERENCE_LOSS, dataset="word_sorting", weight=0.5, samples=4)
TWO_TASKS = COMP.model_copy(update={"tasks": (CAPPED, UNCAPPED)})
DEGENERATE = "degenerate: 12 of 20 gate positions agree"


def _worker_outcome(raws: dict[str, float], failures: dict[str, str]) -> WorkerOutcome:
    """What the scoring worker sends back for these raw scores: evaluate_model's JSON (its
    scoring maths), through the worker's own checks."""
    from finetune.scoring import aggregate_score, effective_weights, normalised_scores
    from finetune.validator.worker import _outcome_from_result

    normalized = normalised_scores(raws, TWO_TASKS.tasks)
    weights = effective_weights(TWO_TASKS.tasks)
    tasks = {n: {"raw": r, "normalized": normalized[n], "weighted": weights[n] * normalized[n], "samples": 4,
                 "failure": failures.get(n, "")} for n, r in raws.items()}
    return _outcome_from_result({"total": aggregate_score(raws, TWO_TASKS.tasks), "tasks": tasks}, 1.0, 0)


@pytest.mark.parametrize("protocol", ["next", "reference-3.1"])
def test_a_failed_task_shows_its_reason_and_counts_by_its_normalisation(protocol):
    from finetune.protocol import PROTOCOLS

    rules = PROTOCOLS[protocol]
    failed_gate = ({"FINEWEB": math.inf, "REF": 2.0}, {"FINEWEB": DEGENERATE})
    failed_loss = ({"FINEWEB": 5.0, "REF": math.inf},
                   {"REF": "non_finite_loss: the loss is NaN or inf on 1 of 4 samples"})
    healthy = ({"FINEWEB": 5.0, "REF": 3.0}, {})
    outcomes = {"a": _worker_outcome(*failed_gate), "b": _worker_outcome(*failed_loss), "c": _worker_outcome(*healthy)}
    state = _state(_model("a", 1, 10, "X"), _model("b", 2, 20, "Y"), _model("c", 3, 30, "Z"))
    plan = plan_round(state, TWO_TASKS, window_block=900, seed=1, block_now=1000, protocol=rules)
    result = execute_round(plan, state, lambda model, data: outcomes[model.hotkey], TaskData(seed=1))
    apply_round(state, plan, result)
    by_hotkey = result.by_hotkey()

    # Capped: the failed task counts its maximum, 1, and the model keeps a finite score (and
    # here wins: 0.5 * 1 + 0.5 * 2.0 beats 0.5 * 0.39 + 0.5 * 3.0).
    a = by_hotkey["a"]
    assert a.tasks["FINEWEB"] == (math.inf, 1.0) and a.task_failures == {"FINEWEB": DEGENERATE}
    assert a.score == pytest.approx(1.5) and result.winner == "a"
    # Uncapped: the task stays inf, so does the model's score: it fails the round.
    b = by_hotkey["b"]
    assert b.tasks["REF"] == (math.inf, math.inf) and b.score == math.inf
    assert b.task_failures == {"REF": "non_finite_loss: the loss is NaN or inf on 1 of 4 samples"}
    assert b.reason.startswith("non_finite: no finite score on REF (non_finite_loss: ")
    assert by_hotkey["c"].task_failures == {}

    record = state.competition(7).history["a"][-1]
    assert record.tasks["FINEWEB"] == math.inf and record.task_failures == {"FINEWEB": DEGENERATE}
    assert state.competition(7).history["c"][-1].task_failures == {}
    reloaded = ValidatorState.model_validate_json(state.model_dump_json())
    assert reloaded.competition(7).history["a"][-1].task_failures == {"FINEWEB": DEGENERATE}
