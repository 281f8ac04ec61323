"""The reference's scores-to-weights path, replayed on its own recorded runs (protocol
`reference-3.1`).

The golden scenarios (`golden/weights/scenarios.json`, written by
`scripts/compat/golden_weights.py` from the reference's `Validator.run_step`) give, step by
step, the models evaluated (in the reference's evaluation order), their blocks and raw task
scores; this test recomputes every score, win, win rate, step weight, smoothed weight, chain
weight, u16 emission and keep-set with `finetune.scoring` and the mainnet competition
definitions, carrying the smoothed weights across steps as the reference's tracker does.

The reference works in torch float32 with torch's own order of additions, which
`finetune.scoring.tracker` reproduces: every number agrees to the bit, thresholds at exactly
0.18 included, and so does the u16 emission.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import competitions
from finetune.scoring import compute_wins, epsilon
from finetune.scoring.aggregate import reference_score
from finetune.scoring.history import EvalRecord, should_retry_reference
from finetune.scoring.tracker import (
    chain_weights,
    record_step,
    reference_keep,
    reference_step_weights,
)

GOLDEN = Path(__file__).parent / "golden" / "weights"
ALPHA, THRESHOLD, KEEP = 0.9, 0.18, 3


def _load(name: str) -> dict:
    return json.loads((GOLDEN / name).read_text())


SCENARIOS = _load("scenarios.json")


def _close(a: float, b: float, rel: float = 0.0) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or (rel > 0 and math.isclose(a, b, rel_tol=rel, abs_tol=1e-9))


def _same_weights(ours: dict, golden: dict) -> bool:
    ours = {str(k): v for k, v in ours.items() if v > 0}
    return ours.keys() == golden.keys() and all(_close(ours[k], golden[k]) for k in golden)


def _shares(block: int) -> list[tuple[int, float]]:
    return [(s.competition.id, s.reward_share) for s in competitions.SCHEDULE.active_at(block).competitions]


def _emit(weights: dict[int, float]) -> list[list[int]]:
    """bittensor 9's conversion: round(w / max * 65535), zeros dropped."""
    if not weights:
        return []
    top = max(weights.values())
    return [[uid, round(w / top * 65535)] for uid, w in sorted(weights.items()) if round(w / top * 65535)]


def _scores(step: dict, competition) -> dict[int, float]:
    names = step["tasks"]
    dropped = [t.name for t in competition.tasks if t.name not in names]
    fail = step.get("fail", {})
    scores = {}
    for uid, raw in zip(step["uids"], step["raw"], strict=True):
        no_tokenizer = fail.get(str(uid)) == "no_tokenizer" and competition.constraints.tokenizer is None
        if raw is None or no_tokenizer:
            scores[uid] = math.inf  # not loaded, no model, or no tokenizer of its own
        else:
            scores[uid] = reference_score(dict(zip(names, raw, strict=True)), competition.tasks, dropped)
    return scores


def _replay(scenario: dict) -> list[str]:
    """Every disagreement with the golden run, as a line of text (empty: all agree)."""
    problems: list[str] = []
    smoothed: dict[int, dict[int, float]] = {}
    for step in scenario["steps"]:
        where = f"scenario {scenario['id']} step {step['g']}"
        if "restart_weights" in step:  # a restarted validator sets unthresholded weights first
            weights, renormalised = chain_weights(smoothed, _shares(step["block_asked"]), threshold=0.0,
                                                  size=step["n"])
            smoothed.update(renormalised)
            if not _same_weights(weights, step["restart_weights"]):
                problems.append(f"{where}: start-up weights {weights} != {step['restart_weights']}")
        if step["status"] != "ran":  # nothing to evaluate, or no task data: nothing changes
            recorded = {c for c, w in smoothed.items() if any(v > 0 for v in w.values())}
            if recorded != {int(c) for c in step["ema"]} or not all(
                    _same_weights(smoothed[int(c)], w) for c, w in step["ema"].items()):
                problems.append(f"{where}: smoothed weights {smoothed} != {step['ema']}")
            continue
        block, cid = step["block"], step["comp"]
        competition = competitions.SCHEDULE.competition_at(cid, block)
        out = step["out"]
        scores = _scores(step, competition)
        for uid, ours, theirs in zip(step["uids"], scores.values(), out["score"], strict=True):
            if not _close(ours, theirs, 1e-12):
                problems.append(f"{where}: uid {uid} score {ours} != {theirs}")
        blocks = dict(zip(step["uids"], step["model_block"], strict=True))
        wins, win_rate = compute_wins(scores, blocks, block, competition.constraints.epsilon, nan_ties=True)
        if [wins[u] for u in step["uids"]] != out["wins"] or [win_rate[u] for u in step["uids"]] != out["win_rate"]:
            problems.append(f"{where}: wins {wins} != {out['wins']}")
            continue
        top = max(win_rate, key=win_rate.get)
        if top != out["top_uid"]:
            problems.append(f"{where}: top uid {top} != {out['top_uid']}")
        size = step["n"]
        smoothed[cid] = record_step(smoothed.get(cid), reference_step_weights(win_rate), alpha=ALPHA, size=size)
        active = dict(_shares(block))
        smoothed = {c: w for c, w in smoothed.items() if c in active}
        weights, renormalised = chain_weights(smoothed, _shares(block), threshold=THRESHOLD, size=size)
        smoothed.update(renormalised)
        for c, golden in out["ema"].items():
            if not _same_weights(smoothed.get(int(c), {}), golden):
                problems.append(f"{where}: smoothed weights of {c} {smoothed.get(int(c))} != {golden}")
        if not _same_weights(weights, out["weights"]):
            problems.append(f"{where}: weights {weights} != {out['weights']}")
        emitted = dict(map(tuple, _emit(weights)))
        expected = dict(map(tuple, out["emit"]))
        if emitted.keys() != expected.keys() or emitted != expected:
            problems.append(f"{where}: emission {emitted} != {expected}")
        keep = reference_keep(win_rate, smoothed[cid], k=KEEP)
        if sorted(keep) != sorted(out["keep"]):
            problems.append(f"{where}: keep {sorted(keep)} != {out['keep']}")
    return problems


def test_every_golden_scenario_replays_to_the_reference_weights():
    problems = [line for scenario in SCENARIOS["scenarios"] for line in _replay(scenario)]
    evaluated = sum(s["status"] == "ran" for sc in SCENARIOS["scenarios"] for s in sc["steps"])
    assert evaluated > 2000
    assert problems == [], f"{len(problems)} disagreements, first: {problems[:5]}"


def test_the_golden_runs_cover_the_cases_that_differ_from_ours():
    modes = {s["mode"] for sc in SCENARIOS["scenarios"] for s in sc["steps"]}
    assert {"all_fail", "all_nan", "normal"} <= modes
    assert any("restart_weights" in s for sc in SCENARIOS["scenarios"] for s in sc["steps"])
    assert SCENARIOS["constants"] == {"alpha": ALPHA, "min_weight_threshold": THRESHOLD, "sample_min": KEEP,
                                      "updated_models_limit": 16, "weights_version_key": 3010}


RETRY = _load("retry.json")


def _competition(cid: int):
    return next(c for c in competitions.ALL_COMPETITIONS if c.id == cid)


def test_retry_rule_matches_the_reference():
    wrong = []
    for case in RETRY["retry"]:
        history = [EvalRecord(block=b, score=s, winner_block=wb, winner_score=ws) for b, s, wb, ws in case["history"]]
        retry = should_retry_reference(history, block_now=case["current_block"],
                                       epsilon_spec=_competition(case["competition_id"]).constraints.epsilon)
        if retry is not case["retry"]:
            wrong.append(case)
    assert len(RETRY["retry"]) == 1000
    assert wrong == []


def test_epsilon_matches_the_reference_to_the_bit():
    for case in RETRY["epsilon"]:
        spec = _competition(case["competition_id"]).constraints.epsilon
        assert epsilon(spec, case["current_block"], case["model_block"]) == case["epsilon"]
