import struct

import pytest

from finetune.errors import ModelRejected, StorageError
from finetune.storage import is_allowed_file, is_safe_file_name, validate_repo_id, validate_revision
from finetune.storage.safetensors_header import parse_header, read_header
from tests.storage.conftest import raw_safetensors


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("model.safetensors", True),
        ("model-00001-of-00002.safetensors", True),
        ("model.safetensors.index.json", True),
        ("config.json", True),
        ("tokenizer.json", True),
        ("chat_template.jinja", True),
        ("merges.txt", True),
        ("pytorch_model.bin", False),
        ("modeling_llama.py", False),
        ("README.md", False),
        (".gitattributes", False),
        ("sub/model.safetensors", False),
        ("../model.safetensors", False),
        ("a[1].safetensors", False),
        ("model..safetensors", False),
    ],
)
def test_is_allowed_file(name, allowed):
    assert is_allowed_file(name) is allowed


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("model.safetensors", True),
        ("onnx/model.onnx", True),
        ("../x", False),
        ("a/../../x", False),
        ("/etc/passwd", False),
        ("a\\b", False),
        ("a//b", False),
        ("", False),
        ("x\x00y", False),
    ],
)
def test_is_safe_file_name(name, safe):
    assert is_safe_file_name(name) is safe


@pytest.mark.parametrize(
    "repo_id", ["../x", "a/b/c", "a/..", "..", "", "a", "/a/b", "a/.b", "a b/c", "a/b:c"]
)
def test_bad_repo_ids_rejected(repo_id):
    with pytest.raises(StorageError) as err:
        validate_repo_id(repo_id)
    assert err.value.reason == "bad_repo_id"


def test_good_repo_id_and_revisions():
    assert validate_repo_id("alice/tiny-model_v1.0") == ("alice", "tiny-model_v1.0")
    assert validate_revision("a" * 40) == "a" * 40
    for bad in ("main", "A" * 40, "a" * 39, "../" + "a" * 37):
        with pytest.raises(StorageError) as err:
            validate_revision(bad)
        assert err.value.reason == "bad_revision"


def _write(path, header, data):
    path.write_bytes(raw_safetensors(header, data))
    return path


def test_read_header_valid(tmp_path):
    header = {
        "__metadata__": {"format": "pt"},
        "b": {"dtype": "BF16", "shape": [2], "data_offsets": [8, 12]},
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    }
    entries = read_header(_write(tmp_path / "m.safetensors", header, bytes(12)))
    assert [(e.name, e.parameter_count) for e in entries] == [("a", 2), ("b", 2)]


@pytest.mark.parametrize(
    ("header", "data_len", "why"),
    [
        ({"a": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 8]}}, 8, "spans"),  # lies
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 12, "cover"),  # trailing
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 4, "cover"),  # truncated
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, 8, "starts"),  # gap
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
            },
            8,
            "starts",
        ),  # overlap
        ({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 1]}}, 1, "dtype"),
        ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, 0, "shape"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, 8, "offsets"),
        ({"a": [1, 2]}, 0, "not an object"),
    ],
)
def test_read_header_rejects_lies(tmp_path, header, data_len, why):
    path = _write(tmp_path / "m.safetensors", header, bytes(data_len))
    with pytest.raises(ModelRejected, match=why) as err:
        read_header(path)
    assert err.value.reason == "corrupt_safetensors"


def test_read_header_rejects_garbage(tmp_path):
    cases = {
        "short": b"\x01\x02",
        "too_long": struct.pack("<Q", 10_000) + b"{}",
        "not_json": struct.pack("<Q", 3) + b"{x}",
        "not_object": struct.pack("<Q", 2) + b"[]",
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        with pytest.raises(ModelRejected) as err:
            read_header(path)
        assert err.value.reason == "corrupt_safetensors", name
    with pytest.raises(ModelRejected):
        parse_header(b"\xff\xfe")
