"""ModelCache: atomic downloads, reuse, the free-disk guard, cleanup by reference and age."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import pytest

from finetune.errors import DiskFull, StorageError
from finetune.storage import DirModelStore, ModelCache, content_hash

Usage = namedtuple("Usage", "total used free")
HK, HK2, HK3 = "5HotkeyA", "5HotkeyB", "5HotkeyC"
REPO = "alice/tiny"


class CountingStore:
    """Wraps a store and counts downloads; can be told to fail mid-download."""

    def __init__(self, inner, fail=False):
        self.inner, self.fail, self.downloads = inner, fail, 0

    def revision_info(self, repo_id, revision):
        return self.inner.revision_info(repo_id, revision)

    def download(self, repo_id, revision, dest_dir, *, deadline_s=None):
        self.downloads += 1
        path = self.inner.download(repo_id, revision, dest_dir, deadline_s=deadline_s)
        if self.fail:
            raise StorageError("connection dropped", reason="hub_unreachable")
        return path


@pytest.fixture
def uploaded(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"x" * 1000)
    (src / "config.json").write_text("{}")
    store = DirModelStore(tmp_path / "hub")
    return CountingStore(store), store.upload(src, REPO), src


def _cache(tmp_path, free=10**12, min_free=100, clock=lambda: 1000.0):
    return ModelCache(
        tmp_path / "cache",
        min_free_bytes=min_free,
        grace_period_s=60,
        disk_usage=lambda _path: Usage(free * 2, free, free),
        clock=clock,
    )


def test_fetch_downloads_once_then_reuses(tmp_path, uploaded):
    store, sha, src = uploaded
    cache = _cache(tmp_path)
    path = cache.fetch(store, HK, REPO, sha)
    assert path == cache.path_for(HK, sha) == tmp_path / "cache" / HK / sha
    assert content_hash(path) == content_hash(src)
    assert not any(p.is_symlink() for p in path.iterdir())
    assert cache.fetch(store, HK, REPO, sha) == path
    assert store.downloads == 1
    assert cache.last_used(HK, sha) == 1000.0
    assert list((tmp_path / "cache" / ".tmp").iterdir()) == []


def test_failed_download_leaves_nothing(tmp_path, uploaded):
    store, sha, _ = uploaded
    store.fail = True
    cache = _cache(tmp_path)
    with pytest.raises(StorageError):
        cache.fetch(store, HK, REPO, sha)
    assert not cache.path_for(HK, sha).exists()
    assert list((tmp_path / "cache" / ".tmp").iterdir()) == []


def test_disk_full_refuses_before_download(tmp_path, uploaded):
    store, sha, _ = uploaded
    with pytest.raises(DiskFull):
        _cache(tmp_path, free=99, min_free=100).fetch(store, HK, REPO, sha)
    # Enough free space now, but not once the revision's ~1 kB is written.
    with pytest.raises(DiskFull) as err:
        _cache(tmp_path, free=1100, min_free=100).fetch(store, HK, REPO, sha)
    assert err.value.reason == "disk_low" and err.value.facts["needed_bytes"] == 1002
    assert store.downloads == 0
    assert _cache(tmp_path, free=1102, min_free=100).fetch(store, HK, REPO, sha).is_dir()


def test_expected_bytes_skips_the_listing(tmp_path, uploaded):
    store, sha, _ = uploaded
    with pytest.raises(DiskFull):
        _cache(tmp_path, free=1000, min_free=100).fetch(store, HK, REPO, sha, expected_bytes=901)


def test_invalid_names_refused(tmp_path):
    cache = _cache(tmp_path)
    for hotkey, revision in (
        ("../x", "a" * 40),
        ("a/b", "a" * 40),
        ("", "a" * 40),
        (HK, "../" + "a" * 37),
        (HK, "main"),
    ):
        with pytest.raises(StorageError):
            cache.path_for(hotkey, revision)


def test_cleanup_keeps_referenced_and_recent(tmp_path, uploaded):
    store, sha, src = uploaded
    now = [1000.0]
    cache = _cache(tmp_path, clock=lambda: now[0])
    (src / "config.json").write_text('{"v": 2}')
    sha2 = DirModelStore(tmp_path / "hub").upload(src, REPO)
    old = cache.fetch(store, HK, REPO, sha2)
    kept = cache.fetch(store, HK, REPO, sha)
    assert not old.exists()  # a hotkey's new revision supersedes the old one at once
    old = cache.fetch(store, HK3, REPO, sha2)
    other = cache.fetch(store, HK2, REPO, sha)
    stray = tmp_path / "cache" / "not-a-hotkey!"
    stray.mkdir()
    now[0] = 1030.0
    cache.touch(HK2, sha)  # used recently
    assert cache.cleanup({HK: sha}, now=1070.0) == [old]
    assert kept.is_dir() and other.is_dir() and stray.is_dir() and not old.exists()
    assert cache.cleanup({}, now=1000.0 + 10_000) == [kept, other]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".tmp", "not-a-hotkey!"]


def test_cleanup_removes_stale_staging(tmp_path):
    cache = _cache(tmp_path)
    staging = tmp_path / "cache" / ".tmp" / "crashed"
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"partial")
    (staging / "model.safetensors").chmod(0o444)
    cache.cleanup({}, now=staging.stat().st_mtime + 10)
    assert staging.exists()
    cache.cleanup({}, now=staging.stat().st_mtime + 61)
    assert not staging.exists()


def test_fetch_survives_cleanup_removing_the_empty_hotkey_folder(tmp_path, uploaded, monkeypatch):
    # The cleanup thread may rmdir an empty hotkey folder between fetch's mkdir and rename.
    import finetune.storage.cache as cache_module

    store, sha, _ = uploaded
    cache = _cache(tmp_path)
    real_rename, calls = cache_module.os.rename, []

    def rename_after_cleanup(src, dst):
        calls.append(dst)
        if len(calls) == 1:
            for leftover in Path(dst).parent.iterdir():  # what cleanup would do: empty it...
                leftover.unlink()
            Path(dst).parent.rmdir()  # ...and remove it
        return real_rename(src, dst)

    monkeypatch.setattr(cache_module.os, "rename", rename_after_cleanup)
    path = cache.fetch(store, HK, REPO, sha)
    assert path.is_dir() and (path / "model.safetensors").is_file()
    assert cache.last_used(HK, sha) == 1000.0


def test_cleanup_tolerates_staging_that_vanishes(tmp_path):
    cache = _cache(tmp_path)
    tmp_root = tmp_path / "cache" / ".tmp"
    tmp_root.mkdir(parents=True)
    (tmp_root / "gone").symlink_to(tmp_path / "removed-by-fetch")  # stat() finds nothing
    cache.cleanup({}, now=10**10)


def test_cleanup_spares_a_download_still_writing(tmp_path):
    import os

    cache = _cache(tmp_path)
    staging = tmp_path / "cache" / ".tmp" / "active"
    (staging / "model").mkdir(parents=True)
    part = staging / "model" / "model.safetensors"
    part.write_bytes(b"growing")
    os.utime(staging, (1000.0, 1000.0))  # the folder itself was made long ago...
    os.utime(staging / "model", (1000.0, 1000.0))
    os.utime(part, (5000.0, 5000.0))  # ...but a file in it is still being written
    cache.cleanup({}, now=5030.0)
    assert part.exists()
    cache.cleanup({}, now=5061.0)
    assert not staging.exists()


def test_a_revision_in_use_survives_pruning_and_cleanup(tmp_path, uploaded):
    store, sha, src = uploaded
    (src / "config.json").write_text('{"v": 3}')
    sha2 = DirModelStore(tmp_path / "hub").upload(src, REPO)
    cache = _cache(tmp_path)
    first = cache.fetch(store, HK, REPO, sha)
    with cache.using(HK, sha):
        second = cache.fetch(store, HK, REPO, sha2)
        assert first.is_dir() and second.is_dir()  # a round is scoring the first one
        assert cache.cleanup({HK: sha2}, now=10**9) == []
    assert cache.prune(HK, keep=sha2) == [first]
