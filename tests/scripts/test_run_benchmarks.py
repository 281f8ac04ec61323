"""The benchmark script runs end to end on the tiny model and the engines agree (speed unchecked)."""

from __future__ import annotations

import json

import pytest

from tests.scripts import load_script

METHODS = {"multiple_choice", "multiple_choice_loglik", "reference_loss", "text_loss", "if_eval"}


@pytest.fixture(scope="module")
def bench():
    return load_script("run_benchmarks")


def test_quick_run_writes_matching_scores(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--quick", "--model", "tiny", "--samples", "3", "--repeats", "1", "--json", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["model"] == "tiny"
    assert set(report["methods"]) == METHODS
    assert "long_reference_loss_memory" not in report  # only on CUDA or with --long
    assert report["threads"] >= 1 and report["seq_len"] == 512
    for name, result in report["methods"].items():
        assert result["scores_match"] is True, name
        assert result["samples"] >= 2
        assert result["engine_s"] > 0 and result["naive_s"] > 0
        assert result["speedup"] == pytest.approx(result["naive_s"] / result["engine_s"])
        assert set(result["peak_mem_mb"]) == {"engine", "naive"}
        assert set(result["tokens_per_s"]) == {"engine", "naive"}
    total = report["competition_totals"]["instruct_competition"]
    parts = [report["methods"][m] for m in total["methods"]]
    assert total["engine_s"] == pytest.approx(sum(p["engine_s"] for p in parts))
    assert total["naive_s"] == pytest.approx(sum(p["naive_s"] for p in parts))
    assert "engine vs naive" in capsys.readouterr().out


def test_workloads_come_from_the_task_pipeline(bench, tiny_model_dir):
    from transformers import AutoTokenizer

    from finetune.eval.benchmark import build_workloads

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    build = lambda vocab: build_workloads(  # noqa: E731
        tokenizer, vocab, bench.SPECS, samples=4, sequence_length=256, seed=3
    )
    first = build(len(tokenizer))
    assert first == build(len(tokenizer))
    kinds = {name: [c.kind for c in w.calls] for name, w in first.items()}
    assert kinds == {
        "multiple_choice": ["generate"],
        "multiple_choice_loglik": ["choice"],
        "reference_loss": ["loss", "loss", "loss"],  # one call per reference task
        "text_loss": ["generate", "loss"],  # the degeneracy gate, then the documents
        "if_eval": ["generate"],
    }
    mc = first["multiple_choice"].calls[0].requests
    assert len(mc) == 4 and mc[0].max_new_tokens == 20 and mc[0].repetition_penalty == 1.1
    assert first["if_eval"].calls[0].requests[0].max_new_tokens == 200
    assert len(first["if_eval"].calls[0].requests) == 4  # two questions for each of 2 samples
    # The chat template opens every prompt, and the MMLU example is shared by all questions.
    start = tuple(tokenizer("<|im_start|>user", add_special_tokens=False)["input_ids"])
    loglik = first["multiple_choice_loglik"].calls[0].requests
    assert all(r.prompt_ids[: len(start)] == start for r in loglik)
    assert len({r.prompt_ids[:40] for r in loglik}) == 1
    for call in first["reference_loss"].calls + first["text_loss"].calls[1:]:
        assert all(len(r.token_ids) <= 256 for r in call.requests)
    # A larger vocabulary: ids are spread into it, one to one.
    wide = build(200_000)
    docs = zip(
        first["text_loss"].calls[1].requests, wide["text_loss"].calls[1].requests, strict=True
    )
    for a, b in docs:
        assert max(b.token_ids) < 200_000 and len(set(b.token_ids)) == len(set(a.token_ids))
