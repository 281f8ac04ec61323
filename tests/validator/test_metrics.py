import json
import sys
import types

import pytest

from finetune.validator.metrics import JsonlSink, NullSink, WandbSink


def test_jsonl_sink_appends_one_line_per_record(tmp_path):
    sink = JsonlSink(tmp_path / "m" / "rounds.jsonl")
    sink.log({"a": 1})
    sink.log({"b": float("inf")})
    lines = (tmp_path / "m" / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"a": 1}, {"b": float("inf")}]
    NullSink().log({"ignored": True})


class _FakeRun:
    def __init__(self, log):
        self.logged, self.finished, self._log = [], False, log

    def log(self, record):
        self.logged.append(record)

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.SimpleNamespace(runs=[], inits=[])

    def init(**kwargs):
        module.inits.append(kwargs)
        run = _FakeRun(module)
        module.runs.append(run)
        return run

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_wandb_sink_starts_a_new_run_every_n_rounds(fake_wandb, tmp_path):
    sink = WandbSink(project="p", entity=None, mode="offline", config={"x": 1}, dir=tmp_path / "w",
                     rounds_per_run=2)
    for i in range(5):
        sink.log({"round": i})
    sink.close()
    assert [len(run.logged) for run in fake_wandb.runs] == [2, 2, 1]
    assert all(run.finished for run in fake_wandb.runs)
    assert fake_wandb.inits[0]["mode"] == "offline" and fake_wandb.inits[0]["dir"] == str(tmp_path / "w")


def test_missing_wandb_names_the_flag_to_turn_it_off(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match="--wandb.project"):
        WandbSink(project="p", entity=None, mode="offline", config={}, dir=tmp_path)
