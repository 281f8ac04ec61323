"""Recipes: the trainer run declares itself, and a re-run reproduces it; tampered weights do not."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import competitions as comps
from finetune.datasets import DataConfig
from finetune.mining.recipe import (
    RecipeSettings,
    Tolerance,
    compare_models,
    compare_scores,
    reproduce,
    rerun,
    run_recipe,
)
from finetune.storage.files import MANIFEST_FILE
from finetune.submission import check_submission

REV = "c" * 40
# One loss task keeps the runs short; the rules (budget, families) are LOCAL_EFFICIENT's.
COMPETITION = comps.LOCAL_EFFICIENT.model_copy(update={"tasks": (comps.dyck_language(1.0, samples=6),)})
SETTINGS = RecipeSettings(tasks=("dyck",), task_samples=32, max_steps=4, lr=3e-3, batch_size=8, seed=3)
OFFLINE = DataConfig(offline=True)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe")
    return run_recipe(tiny_model_dir, COMPETITION, SETTINGS, out / "run", base_repo="bases/tiny-llama-base",
                      base_revision=REV, data_config=OFFLINE)


def test_a_recipe_run_writes_a_manifest_the_validator_accepts(trained):
    raw = (trained.model_dir / MANIFEST_FILE).read_bytes()
    manifest = json.loads(raw)
    assert manifest["base"] == {"repo": "bases/tiny-llama-base", "revision": REV, "license": ""}
    assert manifest["recipe"]["data"] == ["dyck"] and manifest["recipe"]["settings"]["max_steps"] == 4
    config = json.loads((trained.model_dir / "config.json").read_text())
    summary = check_submission(raw, comps.LOCAL_EFFICIENT.constraints, config)
    assert summary["judged"] == "llama base" and summary["train_seconds"] > 0


def test_an_honest_submission_reproduces_and_a_tampered_one_is_flagged(trained, tiny_model_dir, tmp_path):
    run = rerun(trained.model_dir, tiny_model_dir, COMPETITION, tmp_path / "a", data_config=OFFLINE)
    honest = compare_models(trained.model_dir, run, COMPETITION, data_config=OFFLINE)
    assert honest.reproduced and honest.within_budget and not honest.reasons
    assert honest.tasks["DYCK_LANGUAGE"]["difference"] <= 1e-3
    tampered = shutil.copytree(trained.model_dir, tmp_path / "tampered")
    weights = load_file(tampered / "model.safetensors")
    noise = torch.Generator().manual_seed(0)
    weights = {k: v + 0.05 * torch.randn(v.shape, generator=noise) if v.dim() == 2 else v for k, v in weights.items()}
    save_file(weights, tampered / "model.safetensors", metadata={"format": "pt"})
    # The same declared recipe (its manifest was copied), so the one re-run serves both.
    flagged = compare_models(tampered, run, COMPETITION, data_config=OFFLINE)
    assert not flagged.reproduced
    assert flagged.tasks["DYCK_LANGUAGE"]["difference"] > 0.1 and "DYCK_LANGUAGE" in flagged.reasons[0]


def test_tolerance_and_comparison():
    tolerance = Tolerance(atol=0.01, rtol=0.01)
    assert tolerance.allows(2.0, 2.02) and not tolerance.allows(2.0, 2.1)
    assert tolerance.allows(float("inf"), float("inf")) and not tolerance.allows(1.0, float("inf"))
    result = compare_scores({"A": 1.0, "B": 2.0}, {"A": 1.001}, tolerance)
    assert result["A"]["match"] and not result["B"]["match"] and result["B"]["reproduced"] == float("inf")


def test_reproduce_refuses_a_submission_without_a_recipe(tiny_model_dir, tmp_path):
    from finetune.errors import ModelRejected

    with pytest.raises(ModelRejected) as err:
        reproduce(tiny_model_dir, tiny_model_dir, COMPETITION, tmp_path, data_config=OFFLINE)
    assert err.value.reason == "missing_manifest"
