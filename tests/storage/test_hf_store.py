"""HfModelStore specifics: error mapping, retries, offline mode, hostile repos on the Hub."""

from __future__ import annotations

import socket

import pytest

from finetune.errors import ConfigError, ModelRejected, RepoNotFound, StorageError
from finetune.storage import DirModelStore, HfModelStore, check_revision, open_store
from tests.storage.conftest import make_constraints, raw_safetensors

REPO = "alice/tiny"
WEIGHTS = raw_safetensors(
    {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, bytes(16)
)


def _store(hub, sleeps=None, retries=2):
    sleep = sleeps.append if sleeps is not None else (lambda s: None)
    return HfModelStore(
        token=hub.token, endpoint=hub.url, timeout_s=5, retries=retries, backoff_s=0.5, sleep=sleep
    )


def test_transient_errors_are_retried_with_backoff(fake_hub):
    sha = fake_hub.add_commit(REPO, {"model.safetensors": WEIGHTS})
    sleeps: list[float] = []
    fake_hub.fail_queue[:] = [503, 429]
    info = _store(fake_hub, sleeps).revision_info(REPO, sha)
    assert info.revision == sha
    assert sleeps == [0.5, 1.0]


def test_persistent_errors_give_up_with_a_reason(fake_hub):
    sha = fake_hub.add_commit(REPO, {"model.safetensors": WEIGHTS})
    sleeps: list[float] = []
    fake_hub.fail_queue[:] = [502] * 10
    with pytest.raises(StorageError) as err:
        _store(fake_hub, sleeps, retries=2).revision_info(REPO, sha)
    assert err.value.reason == "hub_unavailable"
    assert len(sleeps) == 2
    assert len(fake_hub.requests) == 3


def test_client_errors_are_not_retried(fake_hub):
    sha = fake_hub.add_commit(REPO, {"model.safetensors": WEIGHTS})
    sleeps: list[float] = []
    fake_hub.fail_queue[:] = [403]
    with pytest.raises(StorageError) as err:
        _store(fake_hub, sleeps).revision_info(REPO, sha)
    assert err.value.reason == "hub_error" and sleeps == []


def test_unreachable_hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    store = HfModelStore(
        endpoint=f"http://127.0.0.1:{port}", retries=1, sleep=sleeps.append, timeout_s=2
    )
    with pytest.raises(StorageError) as err:
        store.revision_info(REPO, "a" * 40)
    assert err.value.reason == "hub_unreachable" and sleeps == [1.0]


def test_offline_mode_is_reported_not_retried(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as in the tests' env
    sleeps: list[float] = []
    store = HfModelStore(endpoint="http://127.0.0.1:9", retries=3, sleep=sleeps.append)
    with pytest.raises(StorageError) as err:
        store.revision_info(REPO, "a" * 40)
    assert err.value.reason == "hub_offline" and sleeps == []


def test_corrupt_remote_header_is_rejected(fake_hub):
    bad = b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"
    sha = fake_hub.add_commit(REPO, {"model.safetensors": bad, "config.json": b"{}"})
    with pytest.raises(ModelRejected) as err:
        _store(fake_hub).safetensors_metadata(REPO, sha)
    assert err.value.reason == "corrupt_safetensors"


def test_sharded_headers_are_summed_with_range_reads(fake_hub):
    half = raw_safetensors({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}, bytes(6))
    sha = fake_hub.add_commit(
        REPO,
        {"model-00001-of-00002.safetensors": WEIGHTS, "model-00002-of-00002.safetensors": half},
    )
    summary = _store(fake_hub).safetensors_metadata(REPO, sha)
    assert summary.parameter_count == 7 and summary.dtypes == {"F32": 4, "BF16": 3}
    assert not any(m == "GET" and p.endswith("/resolve/" + sha) for m, p in fake_hub.requests)


def test_hostile_repo_listing_is_seen_before_download_and_never_written(fake_hub, tmp_path):
    files = {
        "model.safetensors": WEIGHTS,
        "config.json": b"{}",
        "../evil.safetensors": WEIGHTS,
        "pytorch_model.bin": b"pickle",
        "modeling.py": b"import os",
    }
    sha = fake_hub.add_commit(REPO, files)
    store = _store(fake_hub)
    info = store.revision_info(REPO, sha)
    assert {f.path for f in info.files} == set(files)
    with pytest.raises(ModelRejected) as err:
        check_revision(info, None, make_constraints())
    assert err.value.reason == "bad_file_name"
    dest = store.download(REPO, sha, tmp_path / "deep" / "snap")
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors"]
    assert not (tmp_path / "deep" / "evil.safetensors").exists()


def test_revision_info_does_not_fetch_weights(fake_hub):
    sha = fake_hub.add_commit(REPO, {"model.safetensors": WEIGHTS})
    _store(fake_hub).revision_info(REPO, sha)
    assert all("/resolve/" not in path for _, path in fake_hub.requests)


def test_open_store(tmp_path):
    assert isinstance(open_store("hf", endpoint="http://127.0.0.1:9"), HfModelStore)
    store = open_store(f"dir:{tmp_path}")
    assert isinstance(store, DirModelStore) and store.root == tmp_path
    for bad in ("s3://bucket", "dir:", "HF"):
        with pytest.raises(ConfigError):
            open_store(bad)


def test_not_found_maps_to_repo_not_found(fake_hub):
    with pytest.raises(RepoNotFound):
        _store(fake_hub).revision_info("nobody/here", "b" * 40)
