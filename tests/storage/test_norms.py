"""Weight norms on every layout: projection names, the hard and soft rules, tiny models."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from finetune.competition import NormLimits
from finetune.errors import ModelRejected
from finetune.storage.norms import (
    check_weight_norms,
    frobenius_norm,
    measure_weight_norms,
    projection_type,
    summarize_norms,
)
from tests.storage.conftest import copy_model


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model.layers.3.self_attn.q_proj.weight", (3, "self_attn.q_proj")),
        ("model.layers.0.mlp.down_proj.weight", (0, "mlp.down_proj")),
        ("model.layers.1.self_attn.qkv_proj.weight", (1, "self_attn.qkv_proj")),  # Phi3
        ("model.layers.1.mlp.gate_up_proj.weight", (1, "mlp.gate_up_proj")),  # Phi3
        ("gpt_neox.layers.2.attention.query_key_value.weight", (2, "attention.query_key_value")),
        ("gpt_neox.layers.2.mlp.dense_4h_to_h.weight", (2, "mlp.dense_4h_to_h")),
        ("transformer.h.7.self_attention.dense.weight", (7, "self_attention.dense")),  # Falcon
        ("model.decoder.layers.0.fc1.weight", (0, "fc1")),  # Bart decoder
        ("model.layers.0.input_layernorm.weight", None),
        ("model.layers.0.post_attention_layernorm.weight", None),
        ("transformer.h.0.ln_attn.weight", None),
        ("model.embed_tokens.weight", None),
        ("lm_head.weight", None),
        ("model.layers.0.self_attn.q_proj.bias", None),
    ],
)
def test_projection_type(name, expected):
    assert projection_type(name) == expected


def test_frobenius_norm_matches_torch():
    gen = torch.Generator().manual_seed(0)
    matrix = torch.randn(3000, 17, generator=gen)
    assert frobenius_norm(matrix) == pytest.approx(float(torch.linalg.norm(matrix)), rel=1e-6)
    assert frobenius_norm(matrix.to(torch.bfloat16)) == pytest.approx(
        float(torch.linalg.norm(matrix.to(torch.bfloat16).float())), rel=1e-5
    )
    matrix[5, 3] = float("nan")
    assert frobenius_norm(matrix) == math.inf


def test_soft_rule_is_a_mean_over_projection_types():
    limits = NormLimits()
    kinds = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    norms = {k: {0: 10.0, 1: 10.0} for k in kinds}
    norms["q_proj"] = {0: 500.0, 1: 500.0}  # 1 type of 7 fully over soft: mean 1/7 < 0.15
    assert summarize_norms(norms, limits).mean_fraction_over_soft == pytest.approx(1 / 7)
    norms["k_proj"] = {0: 500.0, 1: 10.0}  # + half of another: (1 + 0.5) / 7 > 0.15
    report = summarize_norms(norms, limits)
    assert report.mean_fraction_over_soft == pytest.approx(1.5 / 7)
    assert report.max_norm == 500.0 and report.tensors_checked == 14


def _projection_names(model_dir):
    tensors = load_file(model_dir / "model.safetensors")
    return tensors, [n for n, t in tensors.items() if projection_type(n) and t.dim() == 2]


def _rewrite(model_dir, tensors):
    save_file(tensors, model_dir / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3", "gpt_neox"])
def test_tiny_models_pass_and_one_scaled_weight_rejects(arch, tiny_model_dirs, tmp_path):
    source = tiny_model_dirs[arch]
    report = check_weight_norms(source, NormLimits())
    layers = 2
    kinds = {projection_type(n)[1] for n in _projection_names(source)[1]}
    assert report.tensors_checked == layers * len(kinds) >= layers * 4
    assert report.max_norm < 200
    model = copy_model(source, tmp_path / arch)
    tensors, names = _projection_names(model)
    target = names[len(names) // 2]
    tensors[target] = tensors[target] * 1e4
    _rewrite(model, tensors)
    with pytest.raises(ModelRejected, match="hard limit") as err:
        check_weight_norms(model, NormLimits())
    assert err.value.reason == "weight_norms"


def test_soft_limit_on_a_tiny_model(tiny_model_dirs, tmp_path):
    model = copy_model(tiny_model_dirs["llama"], tmp_path / "soft")
    tensors, names = _projection_names(model)

    def scale_kind(kind, norm):
        for name in names:
            if projection_type(name)[1] == kind:
                tensors[name] = tensors[name] * (norm / float(torch.linalg.norm(tensors[name])))
        _rewrite(model, tensors)

    scale_kind("self_attn.q_proj", 500.0)  # 1 of 7 types over soft in every layer: passes
    report = check_weight_norms(model, NormLimits())
    assert report.fraction_over_soft["q_proj"] == 1.0
    scale_kind("mlp.up_proj", 500.0)  # 2 of 7: mean 0.29 > 0.15
    with pytest.raises(ModelRejected, match="soft") as err:
        check_weight_norms(model, NormLimits())
    assert err.value.reason == "weight_norms"


def test_unknown_layout_is_rejected(tmp_path):
    save_file({"encoder.w": torch.ones(4, 4)}, tmp_path / "model.safetensors")
    assert measure_weight_norms(tmp_path) == {}
    with pytest.raises(ModelRejected) as err:
        check_weight_norms(tmp_path, NormLimits())
    assert err.value.reason == "weight_norms"


def test_a_file_the_safetensors_library_refuses_is_a_rejection(tmp_path):
    from tests.storage.conftest import raw_safetensors

    tensor = {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]}
    header = {"__metadata__": {"format": 1}, "model.layers.0.mlp.up_proj.weight": tensor}
    (tmp_path / "model.safetensors").write_bytes(raw_safetensors(header, bytes(4)))
    with pytest.raises(ModelRejected) as err:
        check_weight_norms(tmp_path, NormLimits())
    assert err.value.reason == "corrupt_safetensors"


def test_an_extra_tensor_cannot_stand_in_for_a_real_projection(tiny_model_dirs, tmp_path):
    # Unused tensors that map to the same (layer, type) come later in key order; they must not
    # replace the norm of the weight the model really loads.
    model = copy_model(tiny_model_dirs["llama"], tmp_path / "decoy")
    tensors, _ = _projection_names(model)
    real = "model.layers.0.self_attn.q_proj.weight"
    tensors[real] = tensors[real] * 1e4
    tensors["zzz.layers.0.self_attn.q_proj.weight"] = torch.zeros(2, 2)
    tensors["model.layers.0.self_attn.q_proj.weight_decoy"] = torch.zeros(2, 2)
    _rewrite(model, tensors)
    assert projection_type("model.layers.0.self_attn.q_proj.weight_decoy") is None
    with pytest.raises(ModelRejected, match="hard limit"):
        check_weight_norms(model, NormLimits())


def test_invented_projection_types_cannot_dilute_the_soft_rule():
    from finetune.competition import NormLimits
    from finetune.storage.norms import summarize_norms

    real = {f"self_attn.{p}": {0: 1.0, 1: 1.0} for p in ("o_proj", "v_proj")}
    real |= {f"mlp.{p}": {0: 1.0, 1: 1.0} for p in ("gate_proj", "up_proj", "down_proj")}
    real |= {"self_attn.q_proj": {0: 300.0, 1: 300.0}, "self_attn.k_proj": {0: 300.0, 1: 300.0}}
    decoys = {f"junk{i}_proj": {0: 1.0, 1: 1.0} for i in range(10)}
    limits = NormLimits()
    honest = summarize_norms(real, limits)
    padded = summarize_norms(real | decoys, limits)
    assert honest.mean_fraction_over_soft == pytest.approx(2 / 7)
    assert padded.mean_fraction_over_soft == pytest.approx(2 / 7)
    # A decoy still counts for the hard limit.
    loud = summarize_norms(real | {"junk_proj": {0: 5000.0}}, limits)
    assert loud.max_norm == 5000.0
