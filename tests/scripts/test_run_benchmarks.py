"""The benchmark script runs end to end on the tiny model, every report key is there, and the
engines agree (speed is never checked: targets live in the script's report, not in tests)."""

from __future__ import annotations

import json
import math

import pytest

from finetune.eval._lm_eval_engine import unavailable
from tests.scripts import load_script

METHODS = {"multiple_choice", "multiple_choice_loglik", "reference_loss", "text_loss", "if_eval"}
METHOD_KEYS = {"engine_s", "naive_s", "lm_eval_s", "speedup_vs_naive", "speedup_vs_lm_eval",
               "utilization", "scores_match", "peak_mem_mb"}
ROUND_KEYS = {"models", "total_s", "scoring_s", "overhead_fraction", "phases"}
# The smallest sizes that still run every section, generations capped.
SMALL = ["--quick", "--model", "tiny", "--eval-samples", "2", "--max-new-tokens", "12",
         "--seq-len", "512", "--long-seq", "512"]


@pytest.fixture(scope="module")
def bench():
    return load_script("run_benchmarks")


def test_methods_report_every_key_and_matching_scores(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main([*SMALL, "--round-models", "0", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["model"] == "tiny" and report["seq_len"] == 512
    assert report["threads"] >= 1 and report["load_avg_before"] >= 0
    assert set(report["methods"]) == METHODS and "round" not in report
    with_lm_eval = unavailable() is None
    for name, result in report["methods"].items():
        assert METHOD_KEYS <= set(result), name
        assert result["scores_match"] is True, (name, result["checks"])
        assert result["engine_s"] > 0 and result["naive_s"] > 0
        assert result["speedup_vs_naive"] == pytest.approx(result["naive_s"] / result["engine_s"])
        assert 0 < result["utilization"] < 1
        if with_lm_eval:
            assert result["lm_eval_s"] > 0 and "lm_eval" in result["checks"]
            assert result["speedup_vs_lm_eval"] == pytest.approx(result["lm_eval_s"] / result["engine_s"])
        else:
            assert result["lm_eval_s"] is None and result["speedup_vs_lm_eval"] is None
            assert "lm-eval" in result["lm_eval_reason"]
    limits = report["limits"]
    assert limits["peak_gflops"] > 0 and limits["body_flops_per_token"] > 0
    long = report["long_reference_loss_memory"]
    assert long["sequence_length"] == 512 and long["scores_match"] is True
    assert long["full_logits_mb"] == pytest.approx(512 * limits["vocab"] * 4 / 2**20)
    assert "engine vs naive vs lm-eval" in capsys.readouterr().out


def test_round_and_agreement_and_no_lm_eval(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "unavailable", lambda: "lm-eval is not installed (test)")
    out = tmp_path / "bench.json"
    argv = [*SMALL, "--methods", "reference_loss", "--repeats", "2", "--round-models", "2", "--round-samples", "3",
            "--agreement-samples", "2", "--json", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    result = report["methods"]["reference_loss"]
    assert result["lm_eval_s"] is None and result["speedup_vs_lm_eval"] is None
    assert result["lm_eval_reason"] == "lm-eval is not installed (test)"
    assert result["scores_match"] is True and "lm_eval" not in result["checks"]

    rnd = report["round"]
    assert ROUND_KEYS <= set(rnd) and rnd["models"] == 2 and not rnd["failed"]
    assert set(load_script("_bench_round").PHASES) <= set(rnd["phases"])
    assert 0 < rnd["scoring_s"] < rnd["overlapped_total_s"] < rnd["total_s"]
    assert rnd["overhead_fraction"] == pytest.approx(1 - rnd["scoring_s"] / rnd["total_s"])
    assert sum(p["total_s"] for p in rnd["phases"].values()) == pytest.approx(rnd["total_s"])
    assert len(rnd["scores"]) == 2 and all(math.isfinite(s) for s in rnd["scores"].values())

    agreement = report["agreement"]
    assert agreement["models"] == 2 and len(agreement["fp32_scores"]) == 2
    for kind in ("fp32_logits", "model_dtype"):
        diff = agreement[kind]["sample_rel_diff"]
        assert diff["max"] >= diff["mean"] >= 0
    assert "a round of 2 models" in capsys.readouterr().out


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


def test_round_phases_add_up_to_the_round():
    bench_round = load_script("_bench_round")
    fetched = {"a/m": {"download": 1.0, "checks": 2.0}, "b/m": {"download": 0.5, "checks": 1.5}}
    records = {
        "/c/a": {"called": 100.0, "job_started_at": 100.5, "load_s": 1.0, "tokenize_s": 0.25,
                 "score_s": 10.0, "total_s": 11.25, "job_finished_at": 111.75, "returned": 112.0,
                 "ok": True, "reason": ""},
        "/c/b": {"called": 200.0, "returned": 201.0, "ok": False, "reason": "timeout"},
    }
    repo_of = {"/c/a": "a/m", "/c/b": "b/m"}
    per_model = bench_round._phases(fetched, records, repo_of)
    assert per_model["a/m"] == {"download": 1.0, "checks": 2.0, "worker_start": 0.5, "model_load": 1.0,
                                "tokenization": 0.25, "scoring": 10.0, "result_transfer": 0.25,
                                "job_other": 0.0}
    # A worker that never reported: its whole call is the job's, none of it scoring.
    assert per_model["b/m"]["job_other"] == 1.0 and per_model["b/m"]["scoring"] == 0.0
    summary = bench_round._summary(20.0, per_model, records, repo_of, [])
    assert summary["models"] == 2 and summary["scoring_s"] == 10.0
    assert summary["overhead_fraction"] == pytest.approx(0.5)
    assert summary["overlapped_total_s"] == pytest.approx(20.0 - 5.0)
    assert summary["overlapped_overhead_fraction"] == pytest.approx(5.0 / 15.0)
    assert sum(p["total_s"] for p in summary["phases"].values()) == pytest.approx(20.0)
    assert summary["failed"] == {"b/m": "timeout"}


def test_order_swaps_count_only_close_pairs():
    from finetune.eval._bench_agreement import _swaps

    fp32 = [1.000, 1.005, 2.0]  # only the first two are closer than the smallest epsilon
    assert _swaps([1.0, 1.1, 3.0], [1.2, 1.1, 0.5], fp32) == {"close_pairs": 1, "swapped": 1, "swap_rate": 1.0}
    assert _swaps([1.0, 1.1, 3.0], [1.0, 1.2, 0.5], fp32)["swapped"] == 0
    assert _swaps([1, 2], [2, 1], [1.0, 3.0])["swap_rate"] is None
