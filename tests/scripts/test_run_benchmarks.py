"""The benchmark script runs end to end on the tiny model and the engines agree (speed unchecked)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "run_benchmarks.py"
METHODS = {"multiple_choice", "multiple_choice_loglik", "reference_loss", "text_loss", "if_eval"}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("run_benchmarks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_quick_run_writes_matching_scores(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--quick", "--model", "tiny", "--samples", "3", "--seq-len", "96", "--json", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["model"] == "tiny"
    assert set(report["methods"]) == METHODS
    assert "long_reference_loss_memory" not in report  # only on CUDA or with --long
    for name, result in report["methods"].items():
        assert result["scores_match"] is True, name
        assert result["samples"] == 3
        assert result["engine_s"] > 0 and result["naive_s"] > 0
        assert result["speedup"] == pytest.approx(result["naive_s"] / result["engine_s"])
        assert set(result["peak_mem_mb"]) == {"engine", "naive"}
        assert set(result["tokens_per_s"]) == {"engine", "naive"}
    assert "engine vs naive" in capsys.readouterr().out


def test_requests_are_deterministic_and_well_formed(bench, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    enc = bench.Encoder(tokenizer, 200_000)  # a larger vocabulary: ids are remapped
    first = bench.build_methods(enc, 4, 128, seed=3)
    again = bench.build_methods(enc, 4, 128, seed=3)
    assert first == again
    assert {m.kind for m in first.values()} == {"generate", "choice", "loss"}
    assert first["if_eval"].requests[0].max_new_tokens == 200
    assert first["multiple_choice"].requests[0].repetition_penalty == 1.1
    for method in first.values():
        assert len(method.requests) == 4
    for request in first["text_loss"].requests:
        assert len(request.token_ids) <= 128 and max(request.token_ids) < 200_000
    assert len(set(first["multiple_choice_loglik"].requests[0].choice_ids)) == 4
