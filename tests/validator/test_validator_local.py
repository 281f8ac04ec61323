"""The validator against a devnet chain and a directory hub, with a stand-in evaluator."""

import math
import shutil

import pytest

import competitions
from finetune.validator.state import load_state
from finetune.validator.worker import WorkerOutcome
from tests.validator.helpers import make_subnet, make_validator, publish_model

LOCAL = competitions.LOCAL_SCHEDULE
REASONING = competitions.LOCAL_REASONING.id


def scored_by_repo(scores):
    """A stand-in for the isolated worker: the score is looked up by repo name."""
    calls = []

    def evaluate(model_dir, competition, task_data, *, deadline_s, options, should_abort, memory_bytes=None):
        name = next(s for s in scores if s in str(model_dir) or s == "*")
        calls.append((competition.name, model_dir))
        total = scores[name]
        tasks = {t.name: {"raw": total, "normalized": total, "weighted": total * t.weight, "samples": 2}
                 for t in competition.tasks}
        return WorkerOutcome(math.isfinite(total), total, tasks, reason="" if math.isfinite(total) else "nan")

    evaluate.calls = calls
    return evaluate


def _variant(src, dst, tag: bytes):
    shutil.copytree(src, dst)
    (dst / "generation_config.json").write_bytes((src / "generation_config.json").read_bytes().rstrip() + b" " * len(tag))
    return dst


def test_round_scores_uploads_and_sets_weights(tmp_path, tiny_model_dir):
    chain, store = make_subnet(tmp_path, ["hkA", "hkB", "hkC"])
    other = _variant(tiny_model_dir, tmp_path / "other", b"x")
    publish_model(chain, store, tiny_model_dir, hotkey="hkA", repo_id="alice/base", competition_id=REASONING)
    publish_model(chain, store, other, hotkey="hkB", repo_id="bob/better", competition_id=REASONING)
    chain.advance(5)
    # A later copy of bob's files under another hotkey and repo.
    publish_model(chain, store, other, hotkey="hkC", repo_id="carol/copy", competition_id=REASONING)
    chain.advance(5)

    evaluate = scored_by_repo({"hkA": 2.0, "hkB": 1.0, "hkC": 0.5})
    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=evaluate)
    results = validator.run_once()

    assert [r.competition_name for r in results] == ["LOCAL_REASONING"]
    state = load_state(tmp_path / "state.json")
    assert state.models["hkC"].status == "rejected" and state.models["hkC"].reason == "copy"
    assert {m.hotkey for m in results[0].models} == {"hkA", "hkB"}
    weights = chain.validator_weights()[0]
    uid_b = chain.metagraph().by_hotkey("hkB").uid
    assert weights == {uid_b: 1.0}


def test_rejections_are_recorded_and_others_scored(tmp_path, tiny_model_dir):
    chain, store = make_subnet(tmp_path, ["good", "garbage", "nowhere", "unknown"])
    publish_model(chain, store, tiny_model_dir, hotkey="good", repo_id="good/model", competition_id=REASONING)
    chain.publish_commitment("garbage", "not a model id \x00")
    chain.publish_commitment("nowhere", "ghost:repo:" + "a" * 40 + ":" + "A" * 43 + "=:102")
    publish_model(chain, store, tiny_model_dir, hotkey="unknown", repo_id="un/known", competition_id=77)
    chain.advance(5)
    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=scored_by_repo({"*": 1.0}))
    results = validator.run_once()
    state = load_state(tmp_path / "state.json")
    reasons = {h: m.reason for h, m in state.models.items() if m.status == "rejected"}
    assert reasons == {"garbage": "invalid_commitment", "nowhere": "repo_not_found", "unknown": "unknown_competition"}
    assert [m.hotkey for m in results[0].models] == ["good"]


def test_eval_delay_keeps_a_fresh_model_pending(tmp_path, tiny_model_dir):
    chain, store = make_subnet(tmp_path, ["m"])
    publish_model(chain, store, tiny_model_dir, hotkey="m", repo_id="m/fresh", competition_id=REASONING)
    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=scored_by_repo({"*": 1.0}))
    assert validator.run_once() == []
    assert validator.state.models["m"].status == "pending"
    assert validator.state.models["m"].reason == "eval_delay"
    chain.advance(5)
    validator.config.uid_check_s = 0
    assert len(validator.run_once()) == 1


def test_real_isolated_scoring_of_uploaded_models(tmp_path, tiny_model_dirs):
    """Discover from the metagraph, download, verify and score in the worker process."""
    chain, store = make_subnet(tmp_path, ["hkA", "hkB"])
    publish_model(chain, store, tiny_model_dirs["llama"], hotkey="hkA", repo_id="a/llama", competition_id=REASONING)
    publish_model(chain, store, tiny_model_dirs["qwen2"], hotkey="hkB", repo_id="b/qwen", competition_id=REASONING)
    chain.advance(5)
    validator = make_validator(tmp_path, chain, store, LOCAL, model_deadline_s=120)
    (result,) = validator.run_once()
    scores = {m.hotkey: m.score for m in result.models}
    assert set(scores) == {"hkA", "hkB"}
    assert all(math.isfinite(s) and s > 0 for s in scores.values()), [m.reason for m in result.models]
    assert all(set(m.tasks) == {"SYNTHETIC_1_SFT", "CODEFORCES_COTS"} for m in result.models)
    weights = chain.validator_weights()[0]
    assert sum(weights.values()) == pytest.approx(1.0)


def test_models_weighted_by_high_stake_validators_get_another_look(tmp_path, tiny_model_dir):
    from finetune.validator.updater import high_stake_picks

    chain, store = make_subnet(tmp_path, ["m1", "m2", "m3", "m4", "m5"])
    chain.register("bigvali", stake=500_000.0, validator_permit=True)
    chain.register("smallvali", stake=10.0, validator_permit=True)
    for i in range(1, 6):
        model = _variant(tiny_model_dir, tmp_path / f"v{i}", b"x" * i)
        publish_model(chain, store, model, hotkey=f"m{i}", repo_id=f"m{i}/model", competition_id=REASONING)
    chain.advance(5)
    scores = {"m1": 1.0, "m2": 2.0, "m3": 3.0, "m4": 4.0, "m5": 5.0}
    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=scored_by_repo(scores),
                               high_stake_min_stake=5000.0)
    validator.run_once()
    comp = validator.state.competition(REASONING)
    assert "m5" not in comp.keep and "m5" not in comp.pending  # lost fairly, dropped

    uid = {h: chain.metagraph().by_hotkey(h).uid for h in ("m4", "m5", "bigvali", "smallvali")}
    chain.set_weights("smallvali", {uid["m4"]: 1.0}, version_key=1)
    chain.set_weights("bigvali", {uid["m5"]: 1.0}, version_key=1)
    assert high_stake_picks(chain.metagraph(), chain.validator_weights(), min_stake=5000.0,
                            min_weight=0.001) == {"m5"}

    chain.advance(400)  # the next sync window: too soon, as the reference's 1,200-block cadence
    (result,) = validator.run_once()
    assert "m5" not in {m.hotkey for m in result.models}
    chain.advance(1200)
    (result,) = validator.run_once()
    evaluated = {m.hotkey for m in result.models}
    assert "m5" in evaluated and "m4" not in evaluated


def test_deregistered_hotkeys_are_forgotten_at_the_next_sync(tmp_path, tiny_model_dir):
    chain, store = make_subnet(tmp_path, ["stay", "leave"])
    publish_model(chain, store, tiny_model_dir, hotkey="stay", repo_id="s/model", competition_id=REASONING)
    other = _variant(tiny_model_dir, tmp_path / "other", b"y")
    publish_model(chain, store, other, hotkey="leave", repo_id="l/model", competition_id=REASONING)
    chain.advance(5)
    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=scored_by_repo({"*": 1.0}))
    validator.run_once()
    assert set(validator.state.competition(REASONING).ema) == {"stay", "leave"}

    import sqlite3

    with sqlite3.connect(tmp_path / "devnet.sqlite") as db:  # the devnet has no deregistration call
        db.execute("DELETE FROM neurons WHERE hotkey = 'leave'")
    chain.advance(1)
    validator.sync_metagraph()
    validator.rounds_step()
    assert "leave" not in validator.state.models
    assert set(validator.state.competition(REASONING).ema) == {"stay"}


def test_a_model_in_a_round_is_spared_by_cleanup(tmp_path, tiny_model_dir):
    import time

    chain, store = make_subnet(tmp_path, ["m"])
    publish_model(chain, store, tiny_model_dir, hotkey="m", repo_id="m/model", competition_id=REASONING)
    chain.advance(5)
    seen = {}

    def evaluate(model_dir, competition, task_data, **kwargs):
        # The cleanup thread runs now, with the model no longer referenced (its miner has just
        # committed another revision, say): only the use mark of this evaluation protects it.
        seen["deleted"] = validator.fetcher.cache.cleanup({}, now=time.time())
        return scored_by_repo({"*": 1.0})(model_dir, competition, task_data, **kwargs)

    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=evaluate)
    fetch = validator.fetcher.fetch

    def fetched_long_ago(hotkey, model_id):
        path = fetch(hotkey, model_id)
        validator.fetcher.cache._marker(hotkey, model_id.commit).write_text("1000.0\n")
        return path

    validator.fetcher.fetch = fetched_long_ago
    validator.run_once()
    assert seen["deleted"] == []


def test_daemon_with_max_rounds_sets_its_weights_before_exiting(tmp_path, tiny_model_dir):
    chain, store = make_subnet(tmp_path, ["m"])
    publish_model(chain, store, tiny_model_dir, hotkey="m", repo_id="m/model", competition_id=REASONING)
    chain.advance(5)
    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=scored_by_repo({"*": 1.0}), max_rounds=1,
                               weights_s=3600, weights_retry_s=3600, metagraph_sync_s=3600)
    assert validator.run() == 0
    uid = chain.metagraph().by_hotkey("m").uid
    assert chain.validator_weights()[0] == {uid: 1.0}
