"""Fixtures for the storage tests: a loopback fake Hub, both stores, small model folders."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from finetune.competition import EpsilonSpec, ModelConstraints, NormLimits
from finetune.storage import DirModelStore, HfModelStore
from tests.storage.fake_hub import FakeHub

ARCHS = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Phi3ForCausalLM", "GPTNeoXForCausalLM")


def make_constraints(**overrides) -> ModelConstraints:
    values = dict(
        max_params=10_000_000,
        min_params=1_000,
        max_bytes=50_000_000,
        sequence_length=128,
        allowed_architectures=ARCHS,
        epsilon=EpsilonSpec(start=0.05, end=0.01, decay_blocks=100),
        norm_limits=NormLimits(),
    )
    values.update(overrides)
    return ModelConstraints(**values)


def raw_safetensors(header: dict, data: bytes) -> bytes:
    """Bytes of a safetensors file with exactly this header (which may lie)."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def copy_model(src: Path, dst: Path) -> Path:
    """A writable copy of a model folder."""
    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def fake_hub(monkeypatch):
    """A running fake Hub; the client's offline switch (set by the root conftest) is lifted
    for this loopback server only."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        yield hub


@pytest.fixture
def hf_store(fake_hub) -> HfModelStore:
    return HfModelStore(
        token=fake_hub.token, endpoint=fake_hub.url, timeout_s=5, retries=2, sleep=lambda s: None
    )


@pytest.fixture
def dir_store(tmp_path) -> DirModelStore:
    return DirModelStore(tmp_path / "hub")


@pytest.fixture(params=["dir", "hf"])
def store(request, tmp_path):
    """Each store in turn (the contract tests run against both)."""
    if request.param == "dir":
        return DirModelStore(tmp_path / "hub")
    return request.getfixturevalue("hf_store")


@pytest.fixture
def constraints() -> ModelConstraints:
    return make_constraints()
