"""Files crafted to exhaust or fool the checks (issue 8, items 2, 4 and 6).

The memory figures are measured in a child process with a hard budget (the same isolation the
validator uses): the old code paths go over it, the new ones stay far below.
"""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from finetune.errors import ModelRejected
from finetune.eval import load_model
from finetune.storage import check_model_dir, check_weight_norms, model_dir_violations
from finetune.storage.safetensors_header import MAX_TENSORS_PER_SHARD, read_header
from finetune.validator.isolation import run_in_child
from tests.storage.conftest import copy_model, make_constraints

UP = "model.layers.0.mlp.up_proj.weight"


@pytest.fixture
def model(tiny_model_dir, tmp_path):
    return copy_model(tiny_model_dir, tmp_path / "model")


def _tensors(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def _save(model_dir, tensors):
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})


def _reason(model_dir, **overrides) -> str:
    with pytest.raises(ModelRejected) as err:
        check_model_dir(model_dir, make_constraints(**overrides))
    return err.value.reason


# ---- item 2: memory bombs ------------------------------------------------------------------


def _norms_job(model_dir: str) -> float:
    from finetune.competition import NormLimits

    try:
        return check_weight_norms(model_dir, NormLimits(hard_limit=1e30, soft_limit=1e30)).max_norm
    except ModelRejected as exc:  # the verdict does not matter here, the memory does
        return float(len(exc.reason))


def test_a_one_row_tensor_of_many_elements_is_normed_in_bounded_memory(tmp_path):
    # `[1, 5e8]` uint8 named like a projection cost +5.7 GiB when norms were chunked by rows;
    # here 6e7 elements (60 MB on disk) against a 96 MiB budget, which one float32 copy of the
    # row (240 MB) would already break.
    folder = tmp_path / "m"
    folder.mkdir()
    save_file({UP: torch.full((1, 60_000_000), 3, dtype=torch.uint8)}, str(folder / "model.safetensors"))
    outcome = run_in_child(_norms_job, (str(folder),), deadline_s=120, memory_bytes=96 << 20)
    assert outcome.status == "ok", outcome
    assert math.isclose(outcome.value, math.sqrt(9 * 60_000_000), rel_tol=1e-6)


def test_a_json_bomb_is_refused_by_its_size_before_it_is_parsed(model):
    # 45 MiB of nested `[]` took a validator from 246 MiB to 2.5 GiB; the cap is checked on
    # the file's size, before a single byte is parsed.
    with open(model / "config.json", "w") as handle:
        handle.write("[" + "[]," * (2 * 1024 * 1024) + "[]]")
    started = time.monotonic()
    assert _reason(model) == "oversized_file"
    assert time.monotonic() - started < 5


# ---- item 4: the checks see the model that is evaluated -----------------------------------


def test_a_config_larger_than_its_weights_is_counted_by_the_config(model):
    # 270M parameters declared, one 2x2 tensor stored: scored randomly initialised before.
    config = json.loads((model / "config.json").read_text())
    config.update(hidden_size=1024, intermediate_size=4096, num_hidden_layers=20, num_attention_heads=16,
                  num_key_value_heads=16, head_dim=64, vocab_size=32000)
    (model / "config.json").write_text(json.dumps(config))
    _save(model, {"model.norm.weight": torch.ones(2, 2)})
    assert _reason(model, max_params=10_000_000) == "bad_param_count"
    assert _reason(model, max_params=10**9) == "missing_weights"


def test_an_unused_tensor_does_not_count_towards_min_params(model):
    tensors = _tensors(model)
    real = sum(t.numel() for t in tensors.values())
    tensors["model.extra_padding.weight"] = torch.zeros(3_000_000, dtype=torch.uint8)
    _save(model, tensors)
    reasons = [v.split(":")[0] for v in model_dir_violations(model, make_constraints(min_params=real + 1))]
    assert reasons == ["bad_param_count", "unused_weights"]
    # Where unused tensors are tolerated (they are ignored at load), the count still holds.
    with pytest.raises(ModelRejected) as err:
        check_model_dir(model, make_constraints(min_params=real + 1), reject_unused=False)
    assert err.value.reason == "bad_param_count"
    check_model_dir(model, make_constraints(), reject_unused=False)


def test_missing_weights_are_rejected_at_load_too(model):
    tensors = _tensors(model)
    del tensors[UP]
    tensors["model.layers.0.mlp.up_proj_v2.weight"] = torch.zeros(64, 64)  # same element count elsewhere
    _save(model, tensors)
    with pytest.raises(ModelRejected) as err:
        load_model(model)
    assert err.value.reason == "missing_weights"
    assert "up_proj" in str(err.value)


def test_unused_weights_are_rejected_at_load_unless_allowed(model):
    tensors = _tensors(model)
    tensors["lm_head.unused"] = torch.zeros(3)
    _save(model, tensors)
    with pytest.raises(ModelRejected) as err:
        load_model(model)
    assert err.value.reason == "unused_weights"
    loaded, _ = load_model(model, allow_unused_weights=True)
    assert sum(p.numel() for p in loaded.parameters()) > 0


def test_a_tied_head_stored_twice_is_not_an_unused_tensor(model):
    config = json.loads((model / "config.json").read_text())
    config["tie_word_embeddings"] = True
    (model / "config.json").write_text(json.dumps(config))
    tensors = _tensors(model)
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    _save(model, tensors)
    check_model_dir(model, make_constraints())


# ---- item 6: no time budget on checks -------------------------------------------------------


def test_a_shard_of_a_quarter_million_tiny_tensors_is_refused_from_its_header(tmp_path):
    # 240k tiny tensors in a 25 MB shard took 86 s of CPU per shard.
    folder = tmp_path / "m"
    folder.mkdir()
    tensors = {f"model.layers.{i}.self_attn.q_proj.weight": torch.zeros(1, 1) for i in range(MAX_TENSORS_PER_SHARD + 1)}
    save_file(tensors, str(folder / "model.safetensors"))
    started = time.monotonic()
    with pytest.raises(ModelRejected) as err:
        read_header(folder / "model.safetensors")
    assert err.value.reason == "too_many_tensors"
    assert time.monotonic() - started < 5


def test_a_config_that_trips_an_assertion_in_transformers_is_a_bad_config(model):
    # Found by the fuzzer: an out-of-range pad_token_id asserts inside nn.Embedding.
    config = json.loads((model / "config.json").read_text())
    config["pad_token_id"] = 100_000
    (model / "config.json").write_text(json.dumps(config))
    assert _reason(model) == "bad_config"
