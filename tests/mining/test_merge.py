"""Merging: each method against a plain whole-model computation, the checks, and streaming."""

from __future__ import annotations

import json
import math
import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest
import safetensors
import torch
from safetensors.torch import load_file, save_file

from finetune.errors import ConfigError, ModelRejected, UnknownIdError
from finetune.mining._merge_methods import MergeParams, slerp, tensor_seed, ties
from finetune.mining.merge import REPORT_FILE, known_methods, merge_models

ATOL = 1e-6


def load_all(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model, single-file or sharded, in one dict."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out: dict[str, torch.Tensor] = {}
    for name in files:
        out.update(load_file(model_dir / name))
    return out


# Plain reference formulas, one whole model at a time (dicts of float32 tensors).


def ref_linear(models, weights):
    total = sum(weights)
    return {
        k: sum(w * m[k] for w, m in zip(weights, models, strict=True)) / total for k in models[0]
    }


def ref_task_arithmetic(base, models, weights, lam):
    return {
        k: base[k] + lam * sum(w * (m[k] - base[k]) for w, m in zip(weights, models, strict=True))
        for k in base
    }


def _ref_trim(tau, density):
    flat = tau.abs().flatten().sort(descending=True).values
    k = max(1, round(density * flat.numel()))
    return torch.where(tau.abs() >= flat[k - 1], tau, torch.zeros_like(tau))


def ref_ties(base, models, weights, density, lam):
    out = {}
    for k in base:
        vs = [w * _ref_trim(m[k] - base[k], density) for w, m in zip(weights, models, strict=True)]
        sign = torch.sign(sum(vs))
        num, den = torch.zeros_like(base[k]), torch.zeros_like(base[k])
        for w, v in zip(weights, vs, strict=True):
            agree = ((torch.sign(v) == sign) & (v != 0)).float()
            num += v * agree
            den += w * agree
        merged = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), 0.0)
        out[k] = base[k] + lam * merged
    return out


def ref_dare(base, models, weights, density, lam, seed):
    out = {}
    for k in base:
        gen = torch.Generator().manual_seed(tensor_seed(seed, k))
        total = torch.zeros_like(base[k])
        for w, m in zip(weights, models, strict=True):
            keep = torch.rand(base[k].shape, generator=gen) < density
            total += w * (m[k] - base[k]) * keep / density
        out[k] = base[k] + lam * total
    return out


def ref_slerp(a, b, t):
    out = {}
    for k in a:
        v0, v1 = a[k].double().numpy(), b[k].double().numpy()
        cos = float(np.sum(v0 * v1) / (np.linalg.norm(v0) * np.linalg.norm(v1)))
        if abs(cos) > 0.9995:
            res = (1 - t) * v0 + t * v1
        else:
            theta = math.acos(cos)
            res = (math.sin((1 - t) * theta) * v0 + math.sin(t * theta) * v1) / math.sin(theta)
        out[k] = torch.from_numpy(res).float()
    return out


CASES = {
    "linear": (dict(weights=[0.3, 0.7]), lambda b, ms: ref_linear(ms, [0.3, 0.7])),
    "task_arithmetic": (
        dict(weights=[0.5, 1.5], lam=0.8),
        lambda b, ms: ref_task_arithmetic(b, ms, [0.5, 1.5], 0.8),
    ),
    "ties": (
        dict(weights=[1.0, 2.0], density=0.4, lam=1.2),
        lambda b, ms: ref_ties(b, ms, [1.0, 2.0], 0.4, 1.2),
    ),
    "dare": (
        dict(weights=[0.7, 0.6], density=0.6, lam=0.9, seed=3),
        lambda b, ms: ref_dare(b, ms, [0.7, 0.6], 0.6, 0.9, 3),
    ),
    "slerp": (dict(slerp_t=0.3), lambda b, ms: ref_slerp(ms[0], ms[1], 0.3)),
}


@pytest.mark.parametrize("method", sorted(CASES))
def test_method_matches_whole_model_formula(method, merge_dirs, tmp_path):
    kwargs, reference = CASES[method]
    report = merge_models(
        method=method, base=merge_dirs["base"], models=[merge_dirs["m1"], merge_dirs["m2"]],
        out_dir=tmp_path / "out", **kwargs,
    )  # fmt: skip
    base = load_all(merge_dirs["base"])
    expected = reference(base, [load_all(merge_dirs["m1"]), load_all(merge_dirs["m2"])])
    merged = load_all(tmp_path / "out")
    assert merged.keys() == base.keys()
    for name, want in expected.items():
        assert merged[name].dtype == torch.float32
        torch.testing.assert_close(merged[name], want, atol=ATOL, rtol=0, msg=name)
    assert report.method == method and report.tensors_merged == len(base)
    assert report.output_bytes == (tmp_path / "out" / "model.safetensors").stat().st_size
    assert report.peak_tensor_bytes > 0 and report.elapsed_s >= 0


def test_merged_model_loads_and_runs(merge_dirs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    merge_models(
        method="ties",
        base=merge_dirs["base"],
        models=[merge_dirs["m1"], merge_dirs["m2"]],
        out_dir=out,
    )
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()
    }
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["method"] == "ties" and report["density"] == 0.5
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("hello world", return_tensors="pt").input_ids
    with torch.inference_mode():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer)) and torch.isfinite(logits).all()


def test_bfloat16_output(merge_dirs, tmp_path):
    out = tmp_path / "out"
    merge_models(
        method="linear",
        base=None,
        models=[merge_dirs["m1"], merge_dirs["m2"]],
        out_dir=out,
        dtype="bfloat16",
    )
    merged = load_all(out)
    expected = ref_linear([load_all(merge_dirs["m1"]), load_all(merge_dirs["m2"])], [1.0, 1.0])
    for name, want in expected.items():
        assert merged[name].dtype == torch.bfloat16
        assert torch.equal(merged[name], want.to(torch.bfloat16)), name
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_sharded_output_and_input(merge_dirs, tmp_path):
    sharded = tmp_path / "sharded"
    report = merge_models(
        method="task_arithmetic", base=merge_dirs["base"], models=[merge_dirs["m1"]], out_dir=sharded,
        max_shard_bytes=150_000,
    )  # fmt: skip
    assert len(report.output_files) > 2 and "model.safetensors.index.json" in report.output_files
    assert not (sharded / "model.safetensors").exists()
    # The sharded result is usable as an input, next to a single-file model.
    out = tmp_path / "out"
    merge_models(
        method="linear", base=None, models=[sharded, merge_dirs["m2"]], out_dir=out, weights=[2, 1]
    )
    m1, m2 = load_all(merge_dirs["m1"]), load_all(merge_dirs["m2"])
    for name, got in load_all(out).items():
        torch.testing.assert_close(got, (2 * m1[name] + m2[name]) / 3, atol=ATOL, rtol=0)


def test_dare_is_deterministic_per_seed(merge_dirs, tmp_path):
    def run(seed, name):
        merge_models(
            method="dare",
            base=merge_dirs["base"],
            models=[merge_dirs["m1"]],
            out_dir=tmp_path / name,
            seed=seed,
        )
        return load_all(tmp_path / name)

    a, again, other = run(7, "a"), run(7, "again"), run(8, "other")
    name = "model.layers.0.mlp.up_proj.weight"
    assert all(torch.equal(a[k], again[k]) for k in a)
    assert not torch.equal(a[name], other[name])


def test_streaming_keeps_at_most_one_tensor_per_input(merge_dirs, tmp_path, monkeypatch):
    real_open = safetensors.safe_open
    live, peak, loads = [0], [0], [0]

    def released():
        live[0] -= 1

    class CountingOpen:
        def __init__(self, *args, **kwargs):
            self._ctx = real_open(*args, **kwargs)

        def __enter__(self):
            self._handle = self._ctx.__enter__()
            return self

        def __exit__(self, *exc):
            return self._ctx.__exit__(*exc)

        def get_tensor(self, name):
            tensor = self._handle.get_tensor(name)
            live[0] += 1
            loads[0] += 1
            peak[0] = max(peak[0], live[0])
            weakref.finalize(tensor, released)
            return tensor

    monkeypatch.setattr(safetensors, "safe_open", CountingOpen)
    models = [merge_dirs["m1"], merge_dirs["m2"]]
    report = merge_models(
        method="ties", base=merge_dirs["base"], models=models, out_dir=tmp_path / "out"
    )
    assert loads[0] == 3 * report.tensors_merged  # each tensor of each input read exactly once
    assert peak[0] <= len(models) + 1


def _copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_mismatched_architecture_names_fields_and_tensors(merge_dirs, tmp_path):
    from finetune.tiny_model import build_tiny_model

    narrow = build_tiny_model(tmp_path / "narrow", seed=3, hidden=32)
    with pytest.raises(ModelRejected) as info:
        merge_models(
            method="linear",
            base=merge_dirs["base"],
            models=[merge_dirs["m1"], narrow],
            out_dir=tmp_path / "o",
        )
    message = str(info.value)
    assert info.value.reason == "merge_mismatch"
    assert "config 'hidden_size': model[1] 'narrow' has 32, base" in message and "has 64" in message
    assert "'intermediate_size'" in message and "tensor shapes differ" in message
    assert "model.embed_tokens.weight" in message
    assert "model[0]" not in message  # the matching model is not blamed
    assert not (tmp_path / "o").exists()


def test_mismatched_tensor_names_are_listed(merge_dirs, tmp_path):
    renamed = _copy_model(merge_dirs["m1"], tmp_path / "renamed")
    tensors = load_file(renamed / "model.safetensors")
    tensors["model.norm.scale"] = tensors.pop("model.norm.weight")
    save_file(tensors, renamed / "model.safetensors")
    with pytest.raises(ModelRejected) as info:
        merge_models(
            method="task_arithmetic",
            base=merge_dirs["base"],
            models=[renamed],
            out_dir=tmp_path / "o",
        )
    problems = info.value.facts["problems"]
    assert any("lacks 1 tensors" in p and "model.norm.weight" in p for p in problems)
    assert any("1 tensors not in base" in p and "model.norm.scale" in p for p in problems)


def test_mismatched_tokenizer_is_reported(merge_dirs, tmp_path):
    other = _copy_model(merge_dirs["m2"], tmp_path / "other_tok")
    data = json.loads((other / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[300:302]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (other / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ModelRejected) as info:
        merge_models(
            method="slerp", base=None, models=[merge_dirs["m1"], other], out_dir=tmp_path / "o"
        )
    message = str(info.value)
    assert "tokenizer differs, model[1] 'other_tok' vs model[0]" in message
    assert "vocab" in message and "2 vocab entries differ" in message and repr(first) in message


def test_pickle_only_model_is_refused(merge_dirs, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(merge_dirs["m1"] / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelRejected, match="pickle") as info:
        merge_models(
            method="linear", base=None, models=[merge_dirs["m1"], pickled], out_dir=tmp_path / "o"
        )
    assert info.value.reason == "unsafe_format"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(method="ties", base=None), "needs a base"),
        (dict(method="slerp", base=None, models=["a", "b", "c"]), "exactly 2 models"),
        (dict(method="linear", weights=[1.0]), "1 weights for 2 models"),
        (dict(method="dare", density=0.0), "density"),
        (dict(method="ties", weights=[1.0, -1.0]), "positive"),
        (dict(method="slerp", base=None, weights=[1.0, 1.0]), "not per-model weights"),
        (dict(method="linear", dtype="int8"), "unknown dtype"),
    ],
)
def test_bad_options(kwargs, match, merge_dirs, tmp_path):
    args = dict(
        base=merge_dirs["base"], models=[merge_dirs["m1"], merge_dirs["m2"]], out_dir=tmp_path / "o"
    )
    with pytest.raises(ConfigError, match=match):
        merge_models(**{**args, **kwargs})


def test_unknown_method_lists_known(tmp_path):
    with pytest.raises(UnknownIdError) as info:
        merge_models(method="tie", base=None, models=[tmp_path], out_dir=tmp_path / "o")
    assert "did you mean 'ties'" in str(info.value)
    assert all(name in str(info.value) for name in known_methods())


def test_output_dir_must_be_empty_unless_overwrite(merge_dirs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model-00001-of-00002.safetensors").write_bytes(b"stale")
    args = dict(method="linear", base=None, models=[merge_dirs["m1"]], out_dir=out)
    with pytest.raises(ConfigError, match="not empty"):
        merge_models(**args)
    merge_models(**args, overwrite=True)
    assert not (out / "model-00001-of-00002.safetensors").exists()
    with pytest.raises(ConfigError, match="one of the inputs"):
        merge_models(
            method="linear", base=None, models=[merge_dirs["m1"]], out_dir=merge_dirs["m1"]
        )


def test_ties_known_answer():
    base = torch.zeros(3)
    models = [torch.tensor([1.0, -2.0, 0.1]), torch.tensor([3.0, 1.0, -0.2])]
    out = ties("t", base, models, MergeParams(weights=(1.0, 1.0), density=1.0))
    # signs elected [+, -, -]; each position averages only the agreeing entries
    torch.testing.assert_close(out, torch.tensor([2.0, -2.0, -0.2]))
    trimmed = ties("t", base, models, MergeParams(weights=(1.0, 1.0), density=1 / 3))
    torch.testing.assert_close(trimmed, torch.tensor([3.0, -2.0, 0.0]))  # top-1 of each model


def test_slerp_known_answers():
    x, y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    half = slerp("t", None, [x, y], MergeParams(weights=(), slerp_t=0.5))
    torch.testing.assert_close(half, torch.tensor([math.sqrt(0.5)] * 2))
    parallel = slerp("t", None, [x, 3 * x], MergeParams(weights=(), slerp_t=0.25))
    torch.testing.assert_close(parallel, torch.tensor([1.5, 0.0]))  # linear fallback


def _with_weights(src: Path, dest: Path, write) -> Path:
    dest.mkdir()
    shutil.copy(src / "config.json", dest)
    write(dest)
    return dest


@pytest.mark.parametrize(
    "header",
    [b"[1, 2]", b'{"w": {"shape": [2]}}', b'{"w": {"dtype": "X9", "shape": [2]}}', b'{"w": 3}'],
)
def test_malformed_safetensors_header_is_a_rejection(header, merge_dirs, tmp_path):
    import struct

    bad = _with_weights(
        merge_dirs["m1"], tmp_path / "bad",
        lambda d: (d / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header),
    )  # fmt: skip
    with pytest.raises(ModelRejected) as info:
        merge_models(method="linear", base=None, models=[merge_dirs["m1"], bad], out_dir=tmp_path / "o")
    assert info.value.reason == "bad_weights"


@pytest.mark.parametrize(
    "index",
    ['{"weight_map": ', '{"weight_map": [1]}', '{"weight_map": {"w": "OTHER"}}'],
)
def test_malformed_or_escaping_shard_index_is_a_rejection(index, merge_dirs, tmp_path):
    # OTHER: an existing safetensors file of another directory (absolute path), never read.
    index = index.replace("OTHER", str(merge_dirs["m2"] / "model.safetensors"))
    bad = _with_weights(
        merge_dirs["m1"], tmp_path / "bad",
        lambda d: (d / "model.safetensors.index.json").write_text(index),
    )  # fmt: skip
    with pytest.raises(ModelRejected) as info:
        merge_models(method="linear", base=None, models=[merge_dirs["m1"], bad], out_dir=tmp_path / "o")
    assert info.value.reason == "bad_weights"
