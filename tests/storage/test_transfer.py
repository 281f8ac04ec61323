"""The bounded copy on plain chunk lists: sizes, hashes, deadlines and clean-up."""

from __future__ import annotations

import hashlib

import pytest

from finetune.errors import ModelRejected, StorageError
from finetune.storage import RemoteFile
from finetune.storage.transfer import Deadline, copy_bounded, download_deadline_s, fill_folder

DATA = b"0123456789" * 10


def _remote(data: bytes = DATA, *, size: int | None = None, sha256: bool = True) -> RemoteFile:
    return RemoteFile(
        path="model.safetensors",
        size=len(data) if size is None else size,
        sha256=hashlib.sha256(data).hexdigest() if sha256 else None,
    )


def _pieces(data: bytes, step: int = 7) -> list[bytes]:
    return [data[i : i + step] for i in range(0, len(data), step)]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_deadline_scales_with_size():
    assert download_deadline_s(0, base_s=120, min_rate_bytes_s=20 * 2**20) == 120
    assert download_deadline_s(20 * 2**30, base_s=120, min_rate_bytes_s=20 * 2**20) == 120 + 1024
    with pytest.raises(ValueError):
        download_deadline_s(1, base_s=1, min_rate_bytes_s=0)


def test_exact_bytes_are_written_and_the_part_file_is_renamed(tmp_path):
    target = tmp_path / "model.safetensors"
    assert copy_bounded(_pieces(DATA), target, _remote(), deadline=Deadline(60), what="x") == 100
    assert target.read_bytes() == DATA
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_the_chunk_that_would_pass_the_listed_size_is_never_written(tmp_path):
    written: list[int] = []

    def chunks():
        for piece in _pieces(DATA * 1000, 64):
            written.append(len(piece))
            yield piece

    target = tmp_path / "model.safetensors"
    with pytest.raises(ModelRejected) as err:
        copy_bounded(chunks(), target, _remote(size=100, sha256=False), deadline=Deadline(60), what="x")
    assert err.value.reason == "oversized_download"
    assert err.value.facts["written_bytes"] == 64  # 64 + 64 > 100: the second chunk is refused
    assert err.value.facts["received_bytes"] == 128
    assert len(written) == 2  # it stops reading at once
    assert list(tmp_path.iterdir()) == []


def test_short_and_wrong_bytes_fail_and_leave_nothing(tmp_path):
    target = tmp_path / "model.safetensors"
    with pytest.raises(StorageError) as err:
        copy_bounded(_pieces(DATA[:-1]), target, _remote(), deadline=Deadline(60), what="x")
    assert err.value.reason == "incomplete_download"
    wrong = DATA[::-1]
    with pytest.raises(ModelRejected) as err:
        copy_bounded(_pieces(wrong), target, _remote(), deadline=Deadline(60), what="x")
    assert err.value.reason == "hash_mismatch_download"
    assert list(tmp_path.iterdir()) == []
    # Without a listed hash only the size is held to the listing.
    copy_bounded(_pieces(wrong), target, _remote(sha256=False), deadline=Deadline(60), what="x")
    assert target.read_bytes() == wrong


def test_the_deadline_is_checked_at_every_chunk(tmp_path):
    clock = _Clock()
    deadline = Deadline(5, clock=clock)
    seen = []

    def chunks():
        for piece in _pieces(DATA, 10):
            seen.append(piece)
            clock.now += 1.0  # each chunk arrives a second after the last
            yield piece

    with pytest.raises(StorageError) as err:
        copy_bounded(chunks(), tmp_path / "model.safetensors", _remote(), deadline=deadline, what="x")
    assert err.value.reason == "download_timeout" and len(seen) == 5
    assert list(tmp_path.iterdir()) == []


def test_fill_folder_removes_what_a_failed_download_wrote(tmp_path):
    files = [RemoteFile(path=name, size=1) for name in ("a.safetensors", "b.safetensors")]

    def copy_one(remote, target):
        if remote.path == "b.safetensors":
            raise StorageError("dropped", reason="incomplete_download")
        target.write_bytes(b"x")

    dest = tmp_path / "dest"
    with pytest.raises(StorageError):
        fill_folder(dest, files, copy_one)
    assert dest.is_dir() and list(dest.iterdir()) == []
    (dest / "left.json").write_text("{}")
    with pytest.raises(StorageError) as err:
        fill_folder(dest, files, copy_one)
    assert err.value.reason == "dest_not_empty"
