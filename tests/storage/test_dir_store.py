"""DirModelStore specifics: content addressing, read-only revisions, containment."""

from __future__ import annotations

import json
import os

import pytest

from finetune.errors import StorageError
from finetune.storage import DirModelStore

REPO = "alice/tiny"


def _model(folder, weights=b"abc"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text("{}")
    (folder / "notes.txt").write_text("not uploaded")
    (folder / "pytorch_model.bin").write_bytes(b"never uploaded")
    return folder


def test_same_content_same_revision(tmp_path):
    store = DirModelStore(tmp_path / "hub")
    a = store.upload(_model(tmp_path / "a"), REPO)
    b = store.upload(_model(tmp_path / "b"), REPO)
    c = store.upload(_model(tmp_path / "c", b"abd"), REPO)
    assert a == b != c
    meta = json.loads((tmp_path / "hub" / "alice" / "tiny" / "repo.json").read_text())
    assert meta["revisions"] == [a, c] and meta["private"] is True


def test_only_allowed_files_stored_read_only(tmp_path):
    store = DirModelStore(tmp_path / "hub")
    sha = store.upload(_model(tmp_path / "a"), REPO)
    folder = tmp_path / "hub" / "alice" / "tiny" / "revisions" / sha
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    for path in folder.iterdir():
        assert not os.stat(path).st_mode & 0o222
    assert not list((tmp_path / "hub" / "alice" / "tiny" / "revisions").glob(".upload-*"))


def test_downloaded_copies_are_writable(tmp_path):
    store = DirModelStore(tmp_path / "hub")
    sha = store.upload(_model(tmp_path / "a"), REPO)
    dest = store.download(REPO, sha, tmp_path / "dl")
    (dest / "config.json").write_text('{"changed": true}')  # does not touch the store
    assert store.revision_info(REPO, sha).files[0].path == "config.json"
    folder = tmp_path / "hub" / "alice" / "tiny" / "revisions" / sha
    assert (folder / "config.json").read_text() == "{}"


def test_empty_upload_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError) as err:
        DirModelStore(tmp_path / "hub").upload(tmp_path / "empty", REPO)
    assert err.value.reason == "empty_upload"


def test_traversal_in_repo_id_stays_inside_root(tmp_path):
    store = DirModelStore(tmp_path / "hub")
    for repo_id in ("../x", "a/..", "..%2F/x", "a/b/../../c"):
        with pytest.raises(StorageError):
            store.upload(_model(tmp_path / "m"), repo_id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub", "m"]
    assert list((tmp_path / "hub").iterdir()) == []


def test_metadata_reads_only_allowed_names_from_a_planted_manifest(tmp_path):
    store = DirModelStore(tmp_path / "hub")
    sha = store.upload(_model(tmp_path / "a", b"\x00" * 8 + b""), REPO)
    manifest = tmp_path / "hub" / "alice" / "tiny" / "revisions" / f"{sha}.json"
    entries = json.loads(manifest.read_text())
    entries = [e for e in entries if e["path"] != "model.safetensors"]
    entries.append({"path": "../../../outside.safetensors", "size": 1, "sha256": None})
    manifest.write_text(json.dumps(entries))
    (tmp_path / "outside.safetensors").write_bytes(b"garbage")
    assert store.safetensors_metadata(REPO, sha).parameter_count == 0
    dest = store.download(REPO, sha, tmp_path / "dl")
    assert sorted(p.name for p in dest.iterdir()) == ["config.json"]
