"""Regressions of the eval loop (`finetune.validator.loop`) against a devnet chain."""

from __future__ import annotations

import competitions
from finetune.protocol import NEXT
from finetune.scoring import fallback_seed
from tests.validator.fault_runner import stand_in_evaluate
from tests.validator.helpers import make_subnet, make_validator, publish_model

LOCAL = competitions.LOCAL_SCHEDULE
REASONING = competitions.LOCAL_REASONING.id
NEXT_KEY = NEXT.weights_version_key


class BadHashChain:
    """A devnet chain whose block-hash read answers `answer` (a node that lost the block)."""

    def __init__(self, inner, answer) -> None:
        self.inner, self.answer = inner, answer

    def block_hash(self, block):
        return self.answer

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_unusable_block_hash_falls_back_to_the_deterministic_seed(tmp_path, tiny_model_dir):
    chain, store = make_subnet(tmp_path, ["healthy"])
    publish_model(chain, store, tiny_model_dir, hotkey="healthy", repo_id="good/model", competition_id=REASONING)
    chain.advance(5)
    for answer in (None, "", "not-hex"):
        validator = make_validator(tmp_path / str(answer), BadHashChain(chain, answer), store, LOCAL,
                                   evaluate=stand_in_evaluate({"healthy": 1.0}))
        (result,) = validator.run_once()
        assert result.seed == fallback_seed(result.window_block)


def test_deregistered_models_are_no_longer_kept_from_disk_cleanup(tmp_path, tiny_model_dir):
    import sqlite3

    chain, store = make_subnet(tmp_path, ["stay", "leave"])
    publish_model(chain, store, tiny_model_dir, hotkey="stay", repo_id="s/model", competition_id=REASONING)
    publish_model(chain, store, tiny_model_dir, hotkey="leave", repo_id="l/model", competition_id=REASONING)
    chain.advance(5)
    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=stand_in_evaluate({}))
    validator.run_once()
    assert set(validator.referenced_models()) == {"stay", "leave"}
    with sqlite3.connect(tmp_path / "devnet.sqlite") as db:  # the devnet has no deregistration call
        db.execute("DELETE FROM neurons WHERE hotkey = 'leave'")
    chain.advance(1)
    validator.sync_metagraph()
    validator.rounds_step()
    assert set(validator.referenced_models()) == {"stay"}


class BrokenSink:
    """A metrics sink whose backend is down (wandb raises its own, arbitrary errors)."""

    def log(self, record):
        raise RuntimeError("wandb: network error (ConnectionError), entering retry loop")

    def close(self):
        pass


def test_a_failing_metrics_sink_never_loses_the_round(tmp_path, tiny_model_dir):
    from finetune.validator.state import load_state

    chain, store = make_subnet(tmp_path, ["healthy"])
    publish_model(chain, store, tiny_model_dir, hotkey="healthy", repo_id="good/model", competition_id=REASONING)
    chain.advance(5)
    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=stand_in_evaluate({"healthy": 1.0}))
    validator.sink = BrokenSink()
    (result,) = validator.run_once()
    assert result.models[0].score == 1.0
    state = load_state(tmp_path / "state.json")
    assert state.competition(REASONING).last_window == result.window_block
    assert state.last_weights == {"healthy": 1.0}


def test_an_ended_competition_stops_getting_weight_at_once(tmp_path, tiny_model_dir):
    from finetune.competition import CompetitionShare, Schedule, ScheduleEntry
    from finetune.protocol import NEXT

    both = ScheduleEntry(start_block=0, protocol=NEXT, competitions=(
        CompetitionShare(competition=competitions.LOCAL_INSTRUCT, reward_share=0.5),
        CompetitionShare(competition=competitions.LOCAL_REASONING, reward_share=0.5)))
    chain, store = make_subnet(tmp_path, ["inst", "reas"])
    end = chain.current_block() + 100
    schedule = Schedule(entries=(both, ScheduleEntry(start_block=end, protocol=NEXT, competitions=(
        CompetitionShare(competition=competitions.LOCAL_REASONING, reward_share=1.0),))))
    publish_model(chain, store, tiny_model_dir, hotkey="inst", repo_id="i/model",
                  competition_id=competitions.LOCAL_INSTRUCT.id)
    publish_model(chain, store, tiny_model_dir, hotkey="reas", repo_id="r/model", competition_id=REASONING)
    chain.advance(5)
    validator = make_validator(tmp_path, chain, store, schedule, evaluate=stand_in_evaluate({}))
    assert len(validator.run_once()) == 2
    assert validator.state.last_weights == {"inst": 0.5, "reas": 0.5}
    chain.advance(end - chain.current_block())  # same sync window: no new round is due
    validator.sync_metagraph()
    assert validator.rounds_step() == 0
    assert validator.state.last_weights == {"reas": 1.0}
    assert validator.weights_by_uid() == {chain.metagraph().by_hotkey("reas").uid: 1.0}


def test_a_subnet_requiring_a_newer_weights_version_stops_the_validator(tmp_path, tiny_model_dir):
    chain, store = make_subnet(tmp_path, ["healthy"])
    chain.set_weights_version(NEXT_KEY + 1)
    validator = make_validator(tmp_path, chain, store, competitions.LOCAL_SCHEDULE, evaluate=stand_in_evaluate({}))
    assert validator.run() == 2  # at once, nothing evaluated and no weights sent
    assert chain.validator_weights() == {}
    chain.set_weights_version(NEXT_KEY)
    validator = make_validator(tmp_path, chain, store, competitions.LOCAL_SCHEDULE, evaluate=stand_in_evaluate({}),
                               max_rounds=0)
    validator.stop_event.set()
    assert validator.run() == 0


def test_an_already_scored_window_says_when_the_next_round_is_due(tmp_path, tiny_model_dir, caplog):
    chain, store = make_subnet(tmp_path, ["healthy"])
    publish_model(chain, store, tiny_model_dir, hotkey="healthy", repo_id="good/model", competition_id=REASONING)
    chain.advance(5)
    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=stand_in_evaluate({"healthy": 1.0}))
    validator.run_once()
    with caplog.at_level("INFO", logger="finetune.validator.loop"):
        assert validator.rounds_step() == 0
        assert validator.rounds_step() == 0  # said once per window, not at every idle step
    said = [r.getMessage() for r in caplog.records if "scored" in r.getMessage()]
    assert len(said) == 1 and "next round at block 360" in said[0], said


def test_a_round_without_any_task_data_is_not_charged_to_the_miners(tmp_path, tiny_model_dir):
    from finetune.datasets import DataConfig

    chain, store = make_subnet(tmp_path, ["healthy"])
    publish_model(chain, store, tiny_model_dir, hotkey="healthy", repo_id="good/model", competition_id=REASONING)
    chain.advance(5)
    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=stand_in_evaluate({"healthy": 1.0}))
    empty = tmp_path / "no-data"
    empty.mkdir()
    # Online with an unreachable datasets-server and no local files: no task of the round has data.
    validator.config.data = DataConfig(offline=False, data_dir=empty, endpoint="http://127.0.0.1:9", retries=0)
    assert validator.run_once() == []
    comp = validator.state.competition(REASONING)
    assert comp.history == {} and comp.last_window == -1  # nothing recorded; tried again later
