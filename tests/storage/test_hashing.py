import base64
import hashlib

import pytest

from finetune.storage import content_hash, secure_hash

HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


def _b64sha(data: bytes) -> bytes:
    return base64.b64encode(hashlib.sha256(data).digest())


def test_content_hash_known_vector(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"hello")
    (tmp_path / "config.json").write_bytes(b"{}")
    # By hand: sorted names (config.json, model.safetensors); b64(sha256) of each fed in order.
    assert _b64sha(b"hello") == b"LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="
    outer = hashlib.sha256(_b64sha(b"{}") + _b64sha(b"hello")).digest()
    expected = base64.b64encode(outer).decode()
    assert expected == "tMM3X7OQ69qNKjyvNzsOZco17eJ+YF8p/z5m2bMdtQc="
    assert content_hash(tmp_path) == expected
    assert len(expected) == 44


def test_content_hash_ignores_files_a_validator_does_not_download(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"hello")
    (tmp_path / "config.json").write_bytes(b"{}")
    before = content_hash(tmp_path)
    (tmp_path / "README.md").write_text("hi")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x.safetensors").write_bytes(b"zz")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.safetensors").write_bytes(b"zz")
    assert content_hash(tmp_path) == before


def test_content_hash_depends_on_bytes_and_names(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"hello")
    first = content_hash(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"hellO")
    assert content_hash(tmp_path) != first
    (tmp_path / "model.safetensors").rename(tmp_path / "model-2.safetensors")
    (tmp_path / "model-2.safetensors").write_bytes(b"hello")
    assert content_hash(tmp_path) == first  # only the order of the names matters, not the names


def test_content_hash_of_empty_dir_and_missing_dir(tmp_path):
    assert content_hash(tmp_path) == base64.b64encode(hashlib.sha256().digest()).decode()
    with pytest.raises(NotADirectoryError):
        content_hash(tmp_path / "missing")


def test_content_hash_streams_large_file(tmp_path):
    data = bytes(range(256)) * 9000  # > 2 chunks of 1 MiB
    (tmp_path / "model.safetensors").write_bytes(data)
    outer = hashlib.sha256(_b64sha(data)).digest()
    assert content_hash(tmp_path) == base64.b64encode(outer).decode()


def test_secure_hash_known_vector():
    ch = "tMM3X7OQ69qNKjyvNzsOZco17eJ+YF8p/z5m2bMdtQc="
    by_hand = base64.b64encode(hashlib.sha256((ch + HOTKEY).encode()).digest()).decode()
    assert secure_hash(ch, HOTKEY) == by_hand == "RMzGz3GD1LW3wtGjHwGajC+aBuey1K/ImZQq9G3i4cI="
    assert secure_hash(ch, HOTKEY + "x") != by_hand
