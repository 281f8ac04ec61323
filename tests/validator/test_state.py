import json

from finetune.validator.state import (
    STATE_VERSION,
    EvalRecord,
    TrackedModel,
    ValidatorState,
    load_state,
    save_state,
)


def _state() -> ValidatorState:
    state = ValidatorState()
    state.models["hk1"] = TrackedModel(hotkey="hk1", uid=1, commitment="a:b:c", status="ready")
    state.models["hk2"] = TrackedModel(hotkey="hk2", uid=2, commitment="x", status="rejected", reason="too_large")
    comp = state.competition(3)
    comp.ema = {"hk1": 0.7, "hk2": 0.3}
    comp.keep = ["hk1", "hk2"]
    for window in range(5):
        state.record_eval(3, "hk1", EvalRecord(window_block=window, revision="r", score=0.1 * window), keep_last=3)
    return state


def test_round_trip(tmp_path):
    path = tmp_path / "state.json"
    state = _state()
    save_state(state, path)
    loaded = load_state(path)
    assert loaded.models == state.models
    assert loaded.competition(3).ema == {"hk1": 0.7, "hk2": 0.3}
    assert [r.window_block for r in loaded.competition(3).history["hk1"]] == [2, 3, 4]
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_file_starts_fresh(tmp_path):
    assert load_state(tmp_path / "none.json") == ValidatorState()


def test_corrupt_file_is_moved_aside(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    state = load_state(path)
    assert state == ValidatorState()
    assert not path.exists()
    aside = list(tmp_path.glob("state.json.bad-*"))
    assert len(aside) == 1 and aside[0].read_text() == "{not json"


def test_old_version_is_moved_aside(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": STATE_VERSION + 1, "models": {}}))
    assert load_state(path) == ValidatorState()
    assert list(tmp_path.glob("state.json.bad-*"))


def test_wrong_shape_is_moved_aside(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": STATE_VERSION, "models": {"hk": {"uid": "not an int"}}}))
    assert load_state(path) == ValidatorState()


def test_realign_forgets_deregistered_hotkeys():
    state = _state()
    dropped = state.realign(["hk1"])
    assert dropped == ["hk2"]
    assert set(state.models) == {"hk1"}
    assert state.competition(3).ema == {"hk1": 0.7}
    assert state.competition(3).keep == ["hk1"]
