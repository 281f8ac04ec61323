"""The reference's content hash, reproduced on its own recorded downloads (protocol
`reference-3.1`, `HashRules.file_set == "reference"`).

`golden/hash/layouts.json` (written by `scripts/compat/golden_hash.py` from the reference's
`HuggingFaceModelStore.download_model` on a loopback Hub) lists, per repository layout, the
files the reference's download left in the snapshot and the hash of that folder, or the error
that stopped it. Each layout is rebuilt with `repo_layouts.build_files`; only the files our
validator downloads (the allow-list) are written, as in the real pipeline; then our reference
file set and content hash must be the reference's, and a download the reference could not
finish must be a rejection (at the hash, or at the load step that comes first).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.errors import ModelRejected
from finetune.protocol import NEXT, REFERENCE_31
from finetune.storage import check_loadable, content_hash, is_allowed_file, reference_files
from tests.compat import repo_layouts

GOLDEN = json.loads((Path(__file__).parent / "golden" / "hash" / "layouts.json").read_text())
CASES = GOLDEN["cases"]

# The reference's error per layout -> the reason we reject with (one table).
ERROR_REASONS = {
    "llama-sharded-missing-shard": "missing_weights",  # OSError: shard not found
    "llama-no-weights-only-bin": "unsafe_files",  # OSError: no safetensors
    "llama-duplicate-file-contents": "duplicate_files",  # FileNotFoundError moving the blob
    "llama-no-architectures": "bad_config",  # MinerMisconfiguredError (ValueError on load)
    "llama-no-config": "bad_config",  # EntryNotFoundError
    "llama-config-invalid-json": "bad_config",  # MinerMisconfiguredError
    "llama-config-unknown-model-type": "bad_config",  # MinerMisconfiguredError
}


def _snapshot(case: dict, folder: Path) -> Path:
    for path, data in repo_layouts.build_files(case).items():
        if is_allowed_file(path):  # what our downloader fetches: top-level allowed names
            (folder / path).write_bytes(data)
    return folder


def _reference_hash(folder: Path) -> tuple[list[str], str]:
    """The load step, then the file set and hash, as `verify_model_dir` runs them."""
    check_loadable(folder, checks=REFERENCE_31.checks)
    return reference_files(folder), content_hash(folder, file_set=REFERENCE_31.hashing.file_set)


def test_every_error_has_a_reason():
    assert {c["name"] for c in CASES if c["outcome"] == "error"} == set(ERROR_REASONS)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_reference_file_set_and_hash(case, tmp_path):
    folder = _snapshot(case, tmp_path)
    if case["outcome"] == "error":
        with pytest.raises(ModelRejected) as info:
            _reference_hash(folder)
        assert info.value.reason == ERROR_REASONS[case["name"]], str(info.value)
        return
    names, digest = _reference_hash(folder)
    assert names == case["hashed_files"]
    assert names == repo_layouts.walk_order(names)
    assert digest == case["hash"]
    files = repo_layouts.build_files(case)
    assert digest == repo_layouts.snapshot_hash({name: files[name] for name in names})


def test_our_file_set_is_the_allow_list(tmp_path):
    case = next(c for c in CASES if c["name"] == "llama-pickles-and-extras")
    folder = _snapshot(case, tmp_path)
    ours = content_hash(folder, file_set=NEXT.hashing.file_set)
    assert ours == content_hash(folder)  # the default is ours
    allowed = sorted(p.name for p in folder.iterdir() if is_allowed_file(p.name))
    files = repo_layouts.build_files(case)
    assert ours == repo_layouts.snapshot_hash({name: files[name] for name in allowed})
    assert ours != case["hash"]  # vocab.json, merges.txt and vocab.txt: the reference skips them
