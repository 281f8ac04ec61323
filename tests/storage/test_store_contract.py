"""The same behaviour from both stores (the Hub through a loopback fake, and a local folder)."""

from __future__ import annotations

import hashlib
import math
import shutil

import pytest
from safetensors import safe_open

from finetune.errors import RepoNotFound, StorageError
from finetune.storage import DirModelStore, HfModelStore, ModelStore, content_hash, is_allowed_file

REPO = "alice/tiny"


@pytest.fixture
def uploaded(store, tiny_model_dir):
    sha = store.upload(tiny_model_dir, REPO, private=False)
    return store, sha


def _reader_without_access(store):
    if isinstance(store, DirModelStore):
        return DirModelStore(store.root, read_private=False)
    return HfModelStore(token=False, endpoint=store._endpoint, retries=0)


def test_is_a_model_store(store):
    assert isinstance(store, ModelStore)


def test_revision_info_lists_files_without_download(uploaded, tiny_model_dir):
    store, sha = uploaded
    info = store.revision_info(REPO, sha)
    assert info.repo_id == REPO and info.revision == sha and len(sha) == 40
    expected = sorted(p.name for p in tiny_model_dir.iterdir() if is_allowed_file(p.name))
    assert [f.path for f in info.download_files] == expected
    assert "tiny_model.json" not in {f.path for f in info.files}  # never uploaded
    assert info.total_bytes == sum(f.size for f in info.files)
    weights = next(f for f in info.files if f.path == "model.safetensors")
    data = (tiny_model_dir / "model.safetensors").read_bytes()
    assert weights.size == len(data)
    assert weights.sha256 == hashlib.sha256(data).hexdigest()
    assert info.download_bytes == sum((tiny_model_dir / name).stat().st_size for name in expected)


def test_safetensors_metadata_counts_parameters(uploaded, tiny_model_dir):
    store, sha = uploaded
    with safe_open(str(tiny_model_dir / "model.safetensors"), framework="pt") as f:
        total = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    summary = store.safetensors_metadata(REPO, sha)
    assert summary.parameter_count == total
    assert summary.dtypes == {"F32": total}


def test_download_gives_real_allowed_files_with_the_same_hash(uploaded, tiny_model_dir, tmp_path):
    store, sha = uploaded
    dest = store.download(REPO, sha, tmp_path / "snap")
    names = sorted(p.name for p in dest.iterdir())
    assert names == [f.path for f in store.revision_info(REPO, sha).download_files]
    assert not any(p.is_symlink() for p in dest.iterdir())
    assert content_hash(dest) == content_hash(tiny_model_dir)
    with pytest.raises(StorageError) as err:
        store.download(REPO, sha, dest)
    assert err.value.reason == "dest_not_empty"


def test_new_upload_drops_stale_files(store, tiny_model_dir, tmp_path):
    first = shutil.copytree(tiny_model_dir, tmp_path / "v1")
    (first / "model-extra.safetensors").write_bytes((first / "model.safetensors").read_bytes())
    sha1 = store.upload(first, REPO)
    sha2 = store.upload(tiny_model_dir, REPO)
    assert sha1 != sha2
    assert "model-extra.safetensors" in {f.path for f in store.revision_info(REPO, sha1).files}
    assert "model-extra.safetensors" not in {f.path for f in store.revision_info(REPO, sha2).files}


def test_missing_repo_or_revision_is_repo_not_found(uploaded, tmp_path):
    store, sha = uploaded
    with pytest.raises(RepoNotFound):
        store.revision_info("bob/nothing", sha)
    with pytest.raises(RepoNotFound):
        store.revision_info(REPO, "0" * 40)
    with pytest.raises(RepoNotFound):
        store.safetensors_metadata("bob/nothing", sha)
    with pytest.raises(RepoNotFound):
        store.download(REPO, "0" * 40, tmp_path / "x")
    with pytest.raises(RepoNotFound):
        store.set_private("bob/nothing", False)


@pytest.mark.parametrize("repo_id", ["../escape", "a/../../b", "a/b/c", "/abs/x"])
def test_bad_repo_ids_never_touch_the_store(store, tiny_model_dir, repo_id, tmp_path):
    with pytest.raises(StorageError) as err:
        store.upload(tiny_model_dir, repo_id)
    assert err.value.reason == "bad_repo_id"
    with pytest.raises(StorageError):
        store.revision_info(repo_id, "a" * 40)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "b").exists()


def test_branch_names_are_refused(uploaded):
    store, _ = uploaded
    with pytest.raises(StorageError) as err:
        store.revision_info(REPO, "main")
    assert err.value.reason == "bad_revision"


def test_private_until_made_public(store, tiny_model_dir):
    sha = store.upload(tiny_model_dir, REPO, private=True)
    outsider = _reader_without_access(store)
    with pytest.raises(RepoNotFound):
        outsider.revision_info(REPO, sha)
    assert store.revision_info(REPO, sha).revision == sha  # the owner sees it
    store.set_private(REPO, False)
    assert outsider.revision_info(REPO, sha).revision == sha


def test_manifest_is_uploaded_read_alone_and_never_downloaded_or_hashed(store, tiny_model_dir, tmp_path):
    from finetune.errors import ModelRejected
    from finetune.storage.files import MANIFEST_FILE

    model = shutil.copytree(tiny_model_dir, tmp_path / "m")
    plain = store.upload(model, REPO)
    assert store.read_file(REPO, plain, MANIFEST_FILE, max_bytes=1024) is None
    (model / MANIFEST_FILE).write_text('{"kind": "merge"}')
    sha = store.upload(model, REPO)
    assert sha != plain
    assert store.read_file(REPO, sha, MANIFEST_FILE, max_bytes=1024) == b'{"kind": "merge"}'
    with pytest.raises(ModelRejected) as err:
        store.read_file(REPO, sha, MANIFEST_FILE, max_bytes=4)
    assert err.value.reason == "oversized_file"
    with pytest.raises(StorageError):
        store.read_file(REPO, sha, "../repo.json", max_bytes=1024)
    dest = store.download(REPO, sha, tmp_path / "snap")
    assert MANIFEST_FILE not in {p.name for p in dest.iterdir()}
    assert content_hash(dest) == content_hash(tiny_model_dir)
