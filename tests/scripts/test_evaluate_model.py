"""scripts/evaluate_model.py: exit codes, the printed table and the JSON file."""

from __future__ import annotations

import json

import pytest

import competitions
from finetune.competition import EvalTaskSpec, Method, Normalization, NormKind
from tests.eval.test_evaluate import tiny_competition, write_not_causal_lm
from tests.scripts import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("evaluate_model")


def cheap_competition(**constraints):
    """Two quick tasks on real offline data: log-likelihood multiple choice and word sorting."""
    return tiny_competition(
        [
            EvalTaskSpec(name="MMLU_LOGLIK", method=Method.MULTIPLE_CHOICE_LOGLIK,
                         dataset="synthetic_mmlu", weight=0.6, samples=50, min_samples=50),
            EvalTaskSpec(name="WORD_SORTING", method=Method.REFERENCE_LOSS, dataset="word_sorting",
                         weight=0.4, samples=400, normalization=Normalization(
                             kind=NormKind.INVERSE_EXPONENTIAL, ceiling=40.0)),
        ],
        **constraints,
    )


@pytest.fixture
def use_competition(monkeypatch):
    def use(competition):
        monkeypatch.setattr(competitions, "get_competition", lambda name: competition)

    return use


def run(script, capsys, *args):
    code = script.main(["--no-progress", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_scores_a_model_and_writes_json(script, capsys, tiny_model_dir, tmp_path, use_competition):
    use_competition(cheap_competition())
    out_json = tmp_path / "result.json"
    code, out, err = run(script, capsys, "--model", tiny_model_dir, "--competition", "X",
                         "--offline", "--samples", 2, "--seed", 5, "--json", out_json)
    assert code == 0, err
    assert "MMLU_LOGLIK" in out and "WORD_SORTING" in out and "total" in out
    result = json.loads(out_json.read_text())
    assert result["competition"] == "TEST_TINY" and result["seed"] == 5
    assert result["violations"] == []
    assert set(result["tasks"]) == {"MMLU_LOGLIK", "WORD_SORTING"}
    for score in result["tasks"].values():
        assert {"raw", "normalized", "weighted", "samples"} <= set(score)
        assert score["samples"] == 2
    assert result["total"] == pytest.approx(sum(s["weighted"] for s in result["tasks"].values()))


def test_constraint_violations_exit_1_unless_told_to_score_anyway(
    script, capsys, tiny_model_dir, tmp_path, use_competition
):
    use_competition(cheap_competition(max_params=1000))
    code, out, err = run(script, capsys, "--model", tiny_model_dir, "--competition", "X", "--offline")
    assert code == 1 and "bad_param_count" in err and "--no-constraints" in err
    out_json = tmp_path / "r.json"
    code, out, err = run(script, capsys, "--model", tiny_model_dir, "--competition", "X",
                         "--offline", "--samples", 2, "--no-constraints", "--json", out_json)
    assert code == 0
    assert any("bad_param_count" in v for v in json.loads(out_json.read_text())["violations"])


def test_missing_model_dir_is_exit_2(script, capsys, tmp_path):
    code, out, err = run(script, capsys, "--model", tmp_path / "nope", "--competition",
                         "LOCAL_INSTRUCT")
    assert code == 2 and err.startswith("error:") and "does not exist" in err
    assert "Traceback" not in err


def test_unknown_competition_is_exit_2(script, capsys, tiny_model_dir):
    code, out, err = run(script, capsys, "--model", tiny_model_dir, "--competition", "NO_SUCH")
    assert code == 2 and "unknown competition" in err and "Traceback" not in err


def test_not_a_causal_lm_is_exit_2(script, capsys, tmp_path, use_competition):
    write_not_causal_lm(tmp_path / "vit")
    use_competition(cheap_competition())
    code, out, err = run(script, capsys, "--model", tmp_path / "vit", "--competition", "X")
    assert code == 1 and "bad_architecture" in err
    code, out, err = run(script, capsys, "--model", tmp_path / "vit", "--competition", "X",
                         "--offline", "--samples", 2, "--no-constraints")
    assert code == 2 and "not a causal language model" in err


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("--batch-tokens", "0"), "error: --batch-tokens: must be at least 1 (got 0)"),
        (("--batch-tokens", "many"), "error: --batch-tokens: must be a whole number (got many)"),
        (("--eval-samples", "0"), "error: --eval-samples: must be at least 1 (got 0)"),
        (("--samples", "0"), "error: --samples: must be at least 1 (got 0)"),
        (("--device", "gpu"), "error: --device: must be auto, cpu, cuda or cuda:N (got gpu)"),
        (("--batch-token", "8"), "error: unknown flag --batch-token; did you mean --batch-tokens?"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(script, capsys, tiny_model_dir, args, line):
    code, out, err = run(script, capsys, "--model", tiny_model_dir, "--competition", "LOCAL_INSTRUCT", *args)
    assert code == 2 and err.strip().splitlines() == [line]


def test_cuda_without_cuda_is_one_line_and_exit_2(script, capsys, tiny_model_dir, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, out, err = run(script, capsys, "--model", tiny_model_dir, "--competition", "LOCAL_INSTRUCT",
                         "--device", "cuda")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: --device: no usable CUDA device on this machine")


def test_an_empty_directory_says_config_json_is_missing(script, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = run(script, capsys, "--model", tmp_path / "empty", "--competition", "LOCAL_INSTRUCT")
    assert code == 2
    assert err.strip().splitlines() == [f"error: {tmp_path / 'empty'}: config.json is missing (is this a "
                                        "model directory?)"]
    assert "does not parse" not in err


def test_eval_samples_caps_each_task_like_the_validator(script, capsys, tiny_model_dir, tmp_path,
                                                       use_competition):
    use_competition(cheap_competition())
    out_json = tmp_path / "r.json"
    code, out, err = run(script, capsys, "--model", tiny_model_dir, "--competition", "X", "--offline",
                         "--eval-samples", 3, "--json", out_json)
    assert code == 0, err
    assert {s["samples"] for s in json.loads(out_json.read_text())["tasks"].values()} == {3}


def test_the_live_competition_is_scored_as_a_reference_validator_would(script, capsys, tmp_path,
                                                                       gpt4_tokenizer_dir):
    # DISTILLED_REASONING_3B runs protocol reference-3.1: the reference's draws from the bundled
    # samples, its prompting with the Xenova/gpt-4 tokenizer, its score sum.
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=100_277, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16_384)
    model = tmp_path / "m"
    LlamaForCausalLM(config).save_pretrained(model)  # the fixed tokenizer's vocabulary, tiny otherwise
    out_json = tmp_path / "result.json"
    code, out, err = run(script, capsys, "--model", model, "--competition", "DISTILLED_REASONING_3B",
                         "--offline", "--no-constraints", "--eval-samples", 2, "--seed", 7,
                         "--tokenizer-dir", gpt4_tokenizer_dir, "--json", out_json)
    assert code == 0, err
    assert "bad_param_count" in err  # 3.2B-3.4B: a tiny model breaks the constraints, scored anyway
    result = json.loads(out_json.read_text())
    assert result["protocol"] == "reference-3.1" and "protocol reference-3.1: score" in out
    assert set(result["tasks"]) == {"SYNTHETIC_1_SFT", "CODEFORCES_COTS"}
    assert result["validator_score"] == pytest.approx(
        0.5 * result["tasks"]["SYNTHETIC_1_SFT"]["raw"] + 0.5 * result["tasks"]["CODEFORCES_COTS"]["raw"])
    # The same seed and files give a validator of protocol next other samples: other scores.
    code, _, err = run(script, capsys, "--model", model, "--competition", "DISTILLED_REASONING_3B",
                       "--offline", "--no-constraints", "--eval-samples", 2, "--seed", 7, "--protocol", "next",
                       "--tokenizer-dir", gpt4_tokenizer_dir, "--json", tmp_path / "next.json")
    assert code == 0, err
    assert json.loads((tmp_path / "next.json").read_text())["protocol"] == "next"


def test_a_helm_competition_shows_the_raw_scores_it_ranks_not_weighted_totals(
    script, capsys, tiny_model_dir, tmp_path, use_competition
):
    from finetune.competition import Aggregation

    use_competition(cheap_competition().model_copy(update={"aggregation": Aggregation.HELM}))
    out_json = tmp_path / "helm.json"
    code, out, err = run(script, capsys, "--model", tiny_model_dir, "--competition", "X",
                         "--offline", "--samples", 2, "--json", out_json)
    assert code == 0, err
    assert "HELM ranking" in out and "not used" in out
    assert "weighted" not in out and "│ total" not in out and ": score " not in out  # no weighted total
    result = json.loads(out_json.read_text())
    assert result["aggregation"] == "helm" and result["validator_score"] is None
    assert all(score["failure"] == "" for score in result["tasks"].values())
