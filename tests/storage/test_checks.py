"""Model checks, each with its reason, on crafted listings, folders and tiny models."""

from __future__ import annotations

import json
import struct

import pytest

from finetune.errors import ModelRejected
from finetune.storage import (
    RemoteFile,
    RevisionInfo,
    SafetensorsSummary,
    check_model_dir,
    check_revision,
    content_hash,
    model_dir_violations,
    secure_hash,
    verify_hashes,
)
from tests.storage.conftest import copy_model, make_constraints, raw_safetensors

SHA = "c" * 40
HOTKEY_A = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
HOTKEY_B = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


def _info(*files: tuple[str, int]) -> RevisionInfo:
    remote = tuple(RemoteFile(path=p, size=s) for p, s in files)
    return RevisionInfo(
        repo_id="alice/tiny", revision=SHA, files=remote, total_bytes=sum(s for _, s in files)
    )


def _reason(fn, *args) -> str:
    with pytest.raises(ModelRejected) as err:
        fn(*args)
    return err.value.reason


GOOD = (("model.safetensors", 1000), ("config.json", 10), (".gitattributes", 5), ("README.md", 3))


def test_check_revision_accepts_a_normal_listing():
    check_revision(
        _info(*GOOD),
        SafetensorsSummary(parameter_count=5000, dtypes={"BF16": 5000}),
        make_constraints(),
    )
    check_revision(_info(*GOOD), None, make_constraints())


@pytest.mark.parametrize(
    ("files", "meta", "overrides", "reason"),
    [
        (GOOD, None, {"max_bytes": 1000}, "too_large"),
        ((("pytorch_model.bin", 10), ("config.json", 2)), None, {}, "unsafe_files"),  # pickle only
        (GOOD + (("training_args.bin", 1),), None, {}, "unsafe_files"),
        (GOOD + (("modeling_evil.py", 1),), None, {}, "unsafe_files"),
        ((("config.json", 2),), None, {}, "unsafe_files"),  # no weights at all
        (GOOD + (("../../etc/passwd", 1),), None, {}, "bad_file_name"),
        (GOOD + (("/abs.safetensors", 1),), None, {}, "bad_file_name"),
        (GOOD + (("dir\\x.json", 1),), None, {}, "bad_file_name"),
        (
            GOOD,
            SafetensorsSummary(parameter_count=10**9, dtypes={"F32": 10**9}),
            {},
            "bad_param_count",
        ),
        (GOOD + (("config.json", 2 * 1024 * 1024),), None, {}, "oversized_file"),  # a JSON bomb
        (GOOD + (("tokenizer.json", 65 * 1024 * 1024),), None, {"max_bytes": 10**9}, "oversized_file"),
        (
            GOOD,
            SafetensorsSummary(parameter_count=5000, dtypes={"F32": 5000}, tensor_count=20_001),
            {},
            "too_many_tensors",
        ),
    ],
)
def test_check_revision_rejects(files, meta, overrides, reason):
    assert _reason(check_revision, _info(*files), meta, make_constraints(**overrides)) == reason


@pytest.mark.parametrize("count", [10, 15_000_000])
def test_header_counts_that_a_model_within_the_limits_can_have_wait_for_the_download(count):
    # Headers count a tied output head twice (up to 2x the real count) and cannot see that a
    # model lacks weights: the parameter count the config implies is checked after download.
    check_revision(_info(*GOOD), SafetensorsSummary(parameter_count=count, dtypes={"F32": count}),
                   make_constraints())


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3", "gpt_neox"])
def test_tiny_models_pass(arch, tiny_model_dirs):
    check_model_dir(tiny_model_dirs[arch], make_constraints())
    assert model_dir_violations(tiny_model_dirs[arch], make_constraints()) == []


@pytest.fixture
def model(tiny_model_dir, tmp_path):
    return copy_model(tiny_model_dir, tmp_path / "model")


def _edit_config(model, **changes):
    config = json.loads((model / "config.json").read_text())
    config.update(changes)
    (model / "config.json").write_text(json.dumps(config))


def test_wrong_architecture(model):
    _edit_config(model, architectures=["BertForMaskedLM"])
    assert _reason(check_model_dir, model, make_constraints()) == "bad_architecture"


def test_architecture_must_match_model_type(model):
    _edit_config(model, model_type="gpt2")  # would load GPT2LMHeadModel, not Llama
    assert _reason(check_model_dir, model, make_constraints()) == "bad_architecture"


def test_architecture_not_allowed_by_competition(model):
    constraints = make_constraints(allowed_architectures=("GPTNeoXForCausalLM",))
    assert _reason(check_model_dir, model, constraints) == "bad_architecture"


def test_remote_code(model, tiny_model_dir, tmp_path):
    _edit_config(model, auto_map={"AutoModelForCausalLM": "modeling.Evil"})
    assert _reason(check_model_dir, model, make_constraints()) == "remote_code"
    other = copy_model(tiny_model_dir, tmp_path / "code")
    (other / "modeling_evil.py").write_text("import os")
    assert _reason(check_model_dir, other, make_constraints()) == "remote_code"


def test_bad_config(model):
    (model / "config.json").write_text("{not json")
    assert _reason(check_model_dir, model, make_constraints()) == "bad_config"


def test_pickle_files_in_folder(model):
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    violations = model_dir_violations(model, make_constraints())
    assert [v.split(":")[0] for v in violations] == ["unsafe_files", "unsafe_files"]


def test_truncated_safetensors(model):
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[:-100])
    assert _reason(check_model_dir, model, make_constraints()) == "corrupt_safetensors"


def test_header_that_lies_about_sizes(model):
    # 4 bytes of data, but the header claims a 1000x1000 F32 tensor: never load it.
    lie = {
        "model.layers.0.self_attn.q_proj.weight": {
            "dtype": "F32",
            "shape": [1000, 1000],
            "data_offsets": [0, 4],
        }
    }
    (model / "model.safetensors").write_bytes(raw_safetensors(lie, bytes(4)))
    assert _reason(check_model_dir, model, make_constraints()) == "corrupt_safetensors"


def test_param_count_from_headers(model):
    assert (
        _reason(check_model_dir, model, make_constraints(max_params=1000, min_params=0))
        == "bad_param_count"
    )
    assert _reason(check_model_dir, model, make_constraints(min_params=10**6)) == "bad_param_count"


def test_violations_are_all_listed(model):
    _edit_config(model, architectures=["BertForMaskedLM"])
    (model / "run.py").write_text("")
    reasons = [
        v.split(":")[0]
        for v in model_dir_violations(model, make_constraints(max_params=1000, min_params=0))
    ]
    assert reasons == ["remote_code", "bad_architecture", "bad_param_count"]


def test_norm_check_skipped_without_limits(model):
    from safetensors.torch import load_file, save_file

    tensors = load_file(model / "model.safetensors")
    tensors["model.layers.0.mlp.down_proj.weight"] *= 1e5
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    assert _reason(check_model_dir, model, make_constraints()) == "weight_norms"
    check_model_dir(model, make_constraints(norm_limits=None))


def test_verify_hashes(model):
    digest = content_hash(model)
    assert verify_hashes(model, HOTKEY_A, secure_hash(digest, HOTKEY_A)) == digest
    assert _reason(verify_hashes, model, HOTKEY_A, "x" * 44) == "hash_mismatch"
    (model / "config.json").write_text((model / "config.json").read_text() + " ")
    assert _reason(verify_hashes, model, HOTKEY_A, secure_hash(digest, HOTKEY_A)) == "hash_mismatch"


def test_copied_repo_committed_by_another_hotkey(tiny_model_dir, tmp_path):
    # B re-uploads A's files and commits A's secure hash: same content, other hotkey.
    copy = copy_model(tiny_model_dir, tmp_path / "copy")
    original = secure_hash(content_hash(tiny_model_dir), HOTKEY_A)
    assert content_hash(copy) == content_hash(tiny_model_dir)
    assert _reason(verify_hashes, copy, HOTKEY_B, original) == "hash_mismatch"
    # Re-hashing under its own hotkey passes, but the equal content hash exposes the copy.
    own = verify_hashes(copy, HOTKEY_B, secure_hash(content_hash(copy), HOTKEY_B))
    assert own == content_hash(tiny_model_dir)


@pytest.mark.parametrize(("arch", "approved"), [("llama", True), ("qwen2", True), ("gpt_neox", True),
                                                ("phi3", False)])
def test_approved_base_families(arch, approved, tiny_model_dirs):
    constraints = make_constraints(approved_families=("llama", "qwen", "gpt_neo", "mistral"))
    if approved:
        check_model_dir(tiny_model_dirs[arch], constraints)
    else:
        assert _reason(check_model_dir, tiny_model_dirs[arch], constraints) == "unapproved_family"


def _raw_header_file(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


@pytest.mark.parametrize(
    "header",
    [
        b'{"a": ' + b"1" * 5000 + b"}",  # int over Python's digit limit: ValueError, not JSON error
        b"[" * 100_000 + b"]" * 100_000,  # nesting deep enough for RecursionError
    ],
)
def test_hostile_safetensors_header_is_rejected_not_raised(model, header):
    (model / "model.safetensors").write_bytes(_raw_header_file(header))
    assert _reason(check_model_dir, model, make_constraints()) == "corrupt_safetensors"


def test_metadata_the_safetensors_library_refuses_is_rejected_not_raised(model):
    # Our parser and the library must agree: a non-string metadata value makes safe_open
    # raise its own error, which must become a rejection, never escape the checks.
    tensor = {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]}
    header = {"__metadata__": {"format": 1}, "model.layers.0.mlp.up_proj.weight": tensor}
    (model / "model.safetensors").write_bytes(raw_safetensors(header, bytes(4)))
    assert _reason(check_model_dir, model, make_constraints(min_params=0)) == "corrupt_safetensors"


@pytest.mark.parametrize(
    "text", ['{"vocab_size": ' + "9" * 5000 + "}", "[" * 100_000 + "]" * 100_000]
)
def test_hostile_config_is_bad_config_not_a_crash(model, text):
    (model / "config.json").write_text(text)
    assert _reason(check_model_dir, model, make_constraints()) == "bad_config"
