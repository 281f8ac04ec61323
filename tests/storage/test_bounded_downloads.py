"""Hostile stores against the real download path: the disk holds no more than the listing says,
every download ends by its deadline, and the cache keeps nothing of a failed one.

The Hub cases run the real `huggingface_hub` client against the loopback fake (`serve` makes
it send more bytes than it lists, drip them, or send other ones); the folder cases plant a
revision whose files disagree with its manifest.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from finetune.errors import ModelRejected, StorageError
from finetune.storage import DirModelStore, HfModelStore, ModelCache
from tests.storage.conftest import raw_safetensors
from tests.validator.fault_models import plant_revision

REPO = "mallory/model"
HK = "5HotkeyMallory"
WEIGHTS = raw_safetensors({"w": {"dtype": "F32", "shape": [64], "data_offsets": [0, 256]}}, bytes(256))
CONFIG = b"{}"
HTTP_CHUNK = 64 * 1024  # what one socket read hands the client (httpcore's read size)
LOCAL_CHUNK = 1 << 20  # what one read of a stored file hands the folder store


class DiskPeak:
    """The most bytes seen in files under `root` while the block runs (polled every ms).

    Polling can only miss a peak, never invent one, so `peak <= bound` is a safe assertion.
    """

    def __init__(self, root: Path) -> None:
        self.root, self.peak = root, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _total(self) -> int:
        total = 0
        try:
            for path in self.root.rglob("*"):
                try:
                    if path.is_file():
                        total += path.lstat().st_size
                except FileNotFoundError:
                    continue
        except FileNotFoundError:
            pass
        return total

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            self._stop.wait(0.001)

    def __enter__(self) -> DiskPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._total())


def _cache(tmp_path: Path, **kwargs) -> ModelCache:
    return ModelCache(tmp_path / "cache", min_free_bytes=0, grace_period_s=3600, **kwargs)


def _assert_nothing_cached(cache: ModelCache, revision: str) -> None:
    assert not cache.path_for(HK, revision).exists()
    assert list((cache.root / ".tmp").iterdir()) == []
    assert not any(p.is_file() for p in cache.root.rglob("*"))


def _hub_store(hub, *, timeout_s: float = 5) -> HfModelStore:
    return HfModelStore(
        token=hub.token, endpoint=hub.url, timeout_s=timeout_s, retries=2, sleep=lambda s: None
    )


def _publish(hub) -> str:
    return hub.add_commit(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS})


# ---- the Hub ------------------------------------------------------------------------------


def test_a_plain_download_is_one_get_per_listed_file(fake_hub, tmp_path):
    sha = _publish(fake_hub)
    path = _cache(tmp_path).fetch(_hub_store(fake_hub), HK, REPO, sha)
    assert (path / "model.safetensors").read_bytes() == WEIGHTS
    resolves = [(m, p) for m, p in fake_hub.requests if "/resolve/" in p]
    assert sorted(resolves) == [
        ("GET", f"/{REPO}/resolve/{sha}/config.json"),
        ("GET", f"/{REPO}/resolve/{sha}/model.safetensors"),
    ]


@pytest.mark.parametrize("declare_length", [False, True], ids=["streamed", "announced"])
def test_hub_serving_more_than_listed_is_cut_off_at_the_listed_size(fake_hub, tmp_path, declare_length):
    sha = _publish(fake_hub)
    served = bytes(200 << 20)  # the reproduced attack: listed as 2 bytes, served as 200 MiB
    fake_hub.serve(REPO, sha, "config.json", body=served, declare_length=declare_length)
    cache = _cache(tmp_path)
    started = time.monotonic()
    with DiskPeak(cache.root) as disk, pytest.raises(ModelRejected) as err:
        cache.fetch(_hub_store(fake_hub), HK, REPO, sha)
    assert err.value.reason == "oversized_download"
    assert err.value.facts["listed_bytes"] == len(CONFIG)
    assert err.value.facts["written_bytes"] <= len(CONFIG)
    assert disk.peak <= len(CONFIG) + HTTP_CHUNK
    assert time.monotonic() - started < 5  # stopped at once, not after reading 200 MiB
    _assert_nothing_cached(cache, sha)


def test_hub_serving_an_lfs_file_larger_than_listed_is_rejected(fake_hub, tmp_path):
    sha = _publish(fake_hub)
    fake_hub.serve(REPO, sha, "model.safetensors", body=WEIGHTS + bytes(8 << 20), declare_length=False)
    cache = _cache(tmp_path)
    with DiskPeak(cache.root) as disk, pytest.raises(ModelRejected) as err:
        cache.fetch(_hub_store(fake_hub), HK, REPO, sha)
    assert err.value.reason == "oversized_download"
    assert disk.peak <= len(CONFIG) + len(WEIGHTS) + HTTP_CHUNK
    _assert_nothing_cached(cache, sha)


def test_hub_dripping_bytes_is_stopped_at_the_deadline(fake_hub, tmp_path):
    big = raw_safetensors({"w": {"dtype": "F32", "shape": [1 << 18], "data_offsets": [0, 1 << 20]}}, bytes(1 << 20))
    sha = fake_hub.add_commit(REPO, {"config.json": CONFIG, "model.safetensors": big})
    # 4 KiB every 0.2 s: each read succeeds well within the read timeout, yet 1 MiB takes 51 s.
    fake_hub.serve(REPO, sha, "model.safetensors", drip_bytes=4096, drip_interval_s=0.2)
    deadline_s = 2.0
    cache = _cache(tmp_path, download_base_s=deadline_s, download_min_rate_bytes_s=1e15)
    started = time.monotonic()
    with pytest.raises(StorageError) as err:
        cache.fetch(_hub_store(fake_hub), HK, REPO, sha)
    elapsed = time.monotonic() - started
    assert err.value.reason == "download_timeout"
    assert deadline_s <= elapsed < deadline_s + 3
    _assert_nothing_cached(cache, sha)


def test_hub_stalled_connection_is_stopped_at_the_deadline(fake_hub, tmp_path):
    sha = _publish(fake_hub)
    # One byte, then silence: only the read timeout, capped by the deadline, can end it.
    fake_hub.serve(REPO, sha, "model.safetensors", drip_bytes=1, drip_interval_s=120)
    cache = _cache(tmp_path)
    started = time.monotonic()
    with pytest.raises(StorageError) as err:
        cache.fetch(_hub_store(fake_hub, timeout_s=60), HK, REPO, sha, deadline_s=2.0)
    elapsed = time.monotonic() - started
    assert err.value.reason == "download_timeout"
    assert elapsed < 2.0 + 3
    _assert_nothing_cached(cache, sha)


def test_hub_serving_wrong_bytes_for_an_lfs_file_is_rejected(fake_hub, tmp_path):
    sha = _publish(fake_hub)
    fake_hub.serve(REPO, sha, "model.safetensors", body=WEIGHTS[::-1])  # same size, other bytes
    cache = _cache(tmp_path)
    with pytest.raises(ModelRejected) as err:
        cache.fetch(_hub_store(fake_hub), HK, REPO, sha)
    assert err.value.reason == "hash_mismatch_download"
    _assert_nothing_cached(cache, sha)


@pytest.mark.parametrize("declare_length", [False, True], ids=["streamed", "announced"])
def test_hub_serving_fewer_bytes_than_listed_is_incomplete(fake_hub, tmp_path, declare_length):
    sha = _publish(fake_hub)
    fake_hub.serve(REPO, sha, "model.safetensors", body=WEIGHTS[:-10], declare_length=declare_length)
    cache = _cache(tmp_path)
    with pytest.raises(StorageError) as err:
        cache.fetch(_hub_store(fake_hub), HK, REPO, sha)
    assert err.value.reason == "incomplete_download"
    count = "announced_bytes" if declare_length else "received_bytes"
    assert err.value.facts[count] == len(WEIGHTS) - 10
    assert err.value.facts["listed_bytes"] == len(WEIGHTS)
    _assert_nothing_cached(cache, sha)


def test_hub_transient_error_during_download_is_retried(fake_hub, tmp_path):
    sha = _publish(fake_hub)
    store = _hub_store(fake_hub)
    store.revision_info(REPO, sha)  # listed (and remembered) before the failure is queued
    fake_hub.fail_queue[:] = [503]
    path = _cache(tmp_path).fetch(store, HK, REPO, sha)
    assert (path / "config.json").read_bytes() == CONFIG
    resolves = [(m, p.rsplit("/", 1)[1]) for m, p in fake_hub.requests if "/resolve/" in p]
    assert sorted(resolves) == [
        ("GET", "config.json"), ("GET", "config.json"), ("GET", "model.safetensors")
    ]  # the failed GET once more, and nothing else


# ---- a folder store -----------------------------------------------------------------------


def _planted(tmp_path: Path) -> tuple[DirModelStore, str, Path]:
    store = DirModelStore(tmp_path / "hub")
    sha = plant_revision(store, REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS})
    return store, sha, store.root / REPO / "revisions" / sha


def test_dir_store_file_larger_than_its_manifest_is_not_copied_past_it(tmp_path):
    store, sha, folder = _planted(tmp_path)
    (folder / "model.safetensors").write_bytes(WEIGHTS + bytes(64 << 20))  # grown after listing
    cache = _cache(tmp_path)
    with DiskPeak(cache.root) as disk, pytest.raises(ModelRejected) as err:
        cache.fetch(store, HK, REPO, sha)
    assert err.value.reason == "oversized_download"
    assert err.value.facts["written_bytes"] <= len(WEIGHTS)
    assert err.value.facts["received_bytes"] <= len(WEIGHTS) + LOCAL_CHUNK
    assert disk.peak <= len(CONFIG) + len(WEIGHTS)
    _assert_nothing_cached(cache, sha)


def test_dir_store_file_that_differs_from_its_manifest_hash_is_rejected(tmp_path):
    store, sha, folder = _planted(tmp_path)
    (folder / "model.safetensors").write_bytes(WEIGHTS[::-1])
    with pytest.raises(ModelRejected) as err:
        _cache(tmp_path).fetch(store, HK, REPO, sha)
    assert err.value.reason == "hash_mismatch_download"


def test_dir_store_copy_stops_at_its_deadline_and_leaves_nothing(tmp_path):
    store, sha, _ = _planted(tmp_path)
    with pytest.raises(StorageError) as err:
        store.download(REPO, sha, tmp_path / "dest", deadline_s=0)
    assert err.value.reason == "download_timeout"
    assert list((tmp_path / "dest").iterdir()) == []
