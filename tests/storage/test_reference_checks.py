"""The reference protocol's checks and file set (`REFERENCE_31.checks`, `.hashing`), each rule
on a crafted folder, next to ours (`NEXT`), which must keep its stricter behaviour.

The golden files under tests/compat pin these rules against the reference's own runs; here
each rule is exercised alone, with the reasons it gives.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from finetune.errors import ModelRejected
from finetune.protocol import NEXT, REFERENCE_31
from finetune.storage import (
    RemoteFile,
    RevisionInfo,
    SafetensorsSummary,
    check_loadable,
    check_model_dir,
    check_revision,
    content_hash,
    reference_files,
)
from finetune.storage.norms import bf16_round
from tests.compat import repo_layouts
from tests.storage.conftest import make_constraints

REF, OURS = REFERENCE_31.checks, NEXT.checks
LLAMA = ("LlamaForCausalLM", "MistralForCausalLM", "GemmaForCausalLM", "Phi3ForCausalLM")


def _constraints(**overrides):
    values = dict(min_params=0, allowed_architectures=LLAMA)
    values.update(overrides)
    return make_constraints(**values)


def _write(folder: Path, *entries: dict, seed: int = 1) -> Path:
    files = repo_layouts.build_files({"seed": seed, "files": list(entries)})
    for path, data in files.items():
        (folder / path).write_bytes(data)
    return folder


def _llama(folder: Path, *, config: dict | None = None, weights: dict | None = None, extra=()) -> Path:
    return _write(
        folder,
        {"path": "config.json", "kind": "config", "family": "llama", "set": config or {}},
        {"path": "model.safetensors", "kind": "weights", "family": "llama", **(weights or {})},
        {"path": "tokenizer.json", "kind": "tokenizer_json"},
        {"path": "tokenizer_config.json", "kind": "tokenizer_config"},
        *extra,
    )


def _reason(fn, *args, **kwargs) -> str:
    with pytest.raises(ModelRejected) as err:
        fn(*args, **kwargs)
    return err.value.reason


# -- file set ------------------------------------------------------------------------------
def test_reference_file_set_and_ours(tmp_path):
    _llama(tmp_path, extra=[{"path": "vocab.json", "kind": "vocab_json"}])
    # LlamaTokenizerFast (from model_type llama) reads tokenizer.model/tokenizer.json, not
    # vocab.json; ours hashes every allowed file.
    assert reference_files(tmp_path) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    ]  # fmt: skip
    assert content_hash(tmp_path, file_set="reference") != content_hash(tmp_path)


def test_duplicate_bytes_reject_only_under_the_reference_file_set(tmp_path):
    _llama(tmp_path, extra=[
        {"path": "added_tokens.json", "kind": "text", "text": "{}\n"},
        {"path": "special_tokens_map.json", "kind": "text", "text": "{}\n"},
    ])  # fmt: skip
    assert _reason(content_hash, tmp_path, file_set="reference") == "duplicate_files"
    content_hash(tmp_path)  # ours hashes them both


def test_tokenizer_class_from_config_json_and_slow_names(tmp_path):
    # No tokenizer_class in tokenizer_config.json: config.json's is used; a slow name loads
    # its fast class (GPT2TokenizerFast reads vocab.json and merges.txt).
    _llama(tmp_path, config={"tokenizer_class": "GPT2Tokenizer"}, extra=[
        {"path": "vocab.json", "kind": "vocab_json"},
        {"path": "merges.txt", "kind": "merges_txt"},
    ])  # fmt: skip
    assert "vocab.json" in reference_files(tmp_path) and "merges.txt" in reference_files(tmp_path)


@pytest.mark.parametrize(
    ("files", "chosen"),
    [
        (["tokenizer.4.0.json"], "tokenizer.4.0.json"),
        (["tokenizer.4.0.json", "tokenizer.4.40.json"], "tokenizer.4.40.json"),
        # Versions are walked in string order and the walk stops at the first too-new one:
        # "10.0" sorts before "4.0", so tokenizer.json is used although 4.0 would do.
        (["tokenizer.4.0.json", "tokenizer.10.0.json"], "tokenizer.json"),
        (["tokenizer.9.0.json"], "tokenizer.json"),
    ],
)
def test_versioned_tokenizer_files(tmp_path, files, chosen):
    entries = [{"path": name, "kind": "tokenizer_json"} for name in files]
    _write(
        tmp_path,
        {"path": "config.json", "kind": "config", "family": "llama"},
        {"path": "model.safetensors", "kind": "weights", "family": "llama"},
        {"path": "tokenizer.json", "kind": "text", "text": "plain"},
        {"path": "tokenizer_config.json", "kind": "tokenizer_config",
         "set": {"fast_tokenizer_files": files}},
        *entries,
    )  # fmt: skip
    tokenizer_files = [n for n in reference_files(tmp_path) if n.startswith("tokenizer.")]
    assert tokenizer_files == [chosen]


@pytest.mark.parametrize("value", [None, 3, [1], ["tokenizer.x!.json"]])
def test_unreadable_fast_tokenizer_files_leave_only_the_tokenizer_config(tmp_path, value):
    _llama(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "fast_tokenizer_files": value}))
    assert reference_files(tmp_path) == ["config.json", "model.safetensors", "tokenizer_config.json"]


def test_tokenizer_files_we_never_download_are_refused(tmp_path):
    # T5TokenizerFast reads spiece.model: the reference would hash it if present, and our
    # downloader never fetches that name, so the hash cannot be reproduced.
    _llama(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))
    assert _reason(reference_files, tmp_path) == "unsupported_file"


def test_index_shards_and_a_stale_index(tmp_path):
    _write(
        tmp_path,
        {"path": "config.json", "kind": "config", "family": "llama"},
        {"path": "model.safetensors.index.json", "kind": "index", "parts": 2},
        {"path": "model-00001-of-00002.safetensors", "kind": "weights", "part": [1, 2]},
    )
    assert _reason(reference_files, tmp_path) == "missing_weights"
    _write(tmp_path, {"path": "model.safetensors", "kind": "weights", "family": "llama"})
    assert reference_files(tmp_path) == ["config.json", "model.safetensors"]  # index ignored


# -- checks --------------------------------------------------------------------------------
def _info(*paths: str) -> RevisionInfo:
    files = tuple(RemoteFile(path=p, size=10) for p in paths)
    return RevisionInfo(repo_id="a/b", revision="c" * 40, files=files, total_bytes=10 * len(files))


def test_stray_pickles_and_header_counts_before_download():
    info = _info("config.json", "model.safetensors", "pytorch_model.bin", "train.py")
    assert _reason(check_revision, info, None, make_constraints(), checks=OURS) == "unsafe_files"
    check_revision(info, None, make_constraints(), checks=REF)  # never downloaded: ignored
    huge = SafetensorsSummary(parameter_count=3 * 10_000_000, dtypes={"BF16": 1}, tensor_count=10)
    clean = _info("config.json", "model.safetensors")
    assert _reason(check_revision, clean, huge, make_constraints(), checks=OURS) == "bad_param_count"
    check_revision(clean, huge, make_constraints(), checks=REF)  # unused tensors bound nothing


def test_architecture_is_the_class_model_type_builds(tmp_path):
    model = _llama(tmp_path, config={"architectures": ["Qwen2ForCausalLM", "Anything"]})
    check_model_dir(model, _constraints(), checks=REF)
    assert _reason(check_model_dir, model, _constraints(), checks=OURS) == "bad_architecture"
    narrow = _constraints(allowed_architectures=("MistralForCausalLM",))
    assert _reason(check_model_dir, model, narrow, checks=REF) == "bad_architecture"


@pytest.mark.parametrize("architectures", [[], None, [3], {"a": 1}])
def test_no_usable_architectures_cannot_load(tmp_path, architectures):
    model = _llama(tmp_path, config={"architectures": architectures})
    assert _reason(check_loadable, model, checks=REF) == "bad_config"
    assert _reason(check_model_dir, model, _constraints(), checks=REF) == "bad_config"


def test_parameter_count_comes_before_the_architecture(tmp_path):
    model = _write(
        tmp_path,
        {"path": "config.json", "kind": "config", "family": "qwen2"},
        {"path": "model.safetensors", "kind": "weights", "family": "qwen2"},
    )
    tight = _constraints(min_params=10**6)
    assert _reason(check_model_dir, model, tight, checks=REF) == "bad_param_count"
    assert _reason(check_model_dir, model, tight, checks=OURS) == "bad_architecture"


def test_auto_map_changes_nothing_for_a_known_model_type(tmp_path):
    model = _llama(tmp_path, config={"auto_map": {"AutoModelForCausalLM": "x.Y"}})
    check_model_dir(model, _constraints(), checks=REF)
    assert _reason(check_model_dir, model, _constraints(), checks=OURS) == "remote_code"


def test_unused_tensors_and_stray_shards(tmp_path):
    model = _llama(tmp_path, extra=[{"path": "extra.safetensors", "kind": "weights",
                                     "tensors": [["decoy", [64, 64]]]}])  # fmt: skip
    check_model_dir(model, _constraints(), checks=REF)  # the reference loads model.safetensors only
    assert _reason(check_model_dir, model, _constraints(), checks=OURS) == "unused_weights"


@pytest.mark.parametrize(
    ("norms", "verdict"),
    [
        ({"model.layers.0.self_attn.q_proj.weight": 1001.9}, None),  # bf16: 1000, not above
        ({"model.layers.0.self_attn.q_proj.weight": 1002.1}, "weight_norms"),  # bf16: 1004
        ({"model.layers.0.mlp.gate_proj.weight": 10**6}, None),  # gate is not read
        # Two layers, one type over the soft limit in both: mean share 2/12 > 0.15.
        ({"model.layers.0.mlp.up_proj.weight": 300, "model.layers.1.mlp.up_proj.weight": 300},
         "weight_norms"),
    ],
)  # fmt: skip
def test_reference_norm_rule(tmp_path, norms, verdict):
    model = _llama(tmp_path, weights={"norms": norms})
    if verdict is None:
        check_model_dir(model, _constraints(), checks=REF)
    else:
        assert _reason(check_model_dir, model, _constraints(), checks=REF) == verdict


def test_nan_norms_pass_the_reference_rule_and_fail_ours(tmp_path):
    model = _llama(tmp_path, weights={"patterns": {"model.layers.0.self_attn.q_proj.weight": "nan"}})
    check_model_dir(model, _constraints(), checks=REF)
    assert _reason(check_model_dir, model, _constraints(), checks=OURS) == "weight_norms"


def test_layouts_without_the_six_projections(tiny_model_dirs):
    # Phi3 fuses q/k/v and gate/up: the reference's walk fails on `q_proj`; ours measures it.
    assert _reason(check_model_dir, tiny_model_dirs["phi3"], _constraints(), checks=REF) == (
        "norm_rule_unsupported"
    )
    check_model_dir(tiny_model_dirs["phi3"], _constraints(), checks=OURS)


def test_zero_layers(tmp_path):
    model = _llama(tmp_path, config={"num_hidden_layers": 0}, weights={"set": {"num_hidden_layers": 0}})
    assert _reason(check_model_dir, model, _constraints(), checks=REF) == "norm_rule_unsupported"


@pytest.mark.parametrize(
    ("value", "rounded"),
    [(1000.93, 1000.0), (1001.72, 1000.0), (1002.09, 1004.0), (200.4, 200.0), (200.6, 201.0),
     (math.inf, math.inf), (1e39, math.inf)],
)  # fmt: skip
def test_bf16_round(value, rounded):
    assert bf16_round(value) == rounded
    assert math.isnan(bf16_round(math.nan))
