"""Fixtures for the mining tests: a base and two fine-tune stand-ins of one architecture."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def merge_dirs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """`base` (the shared seed-0 tiny llama) and `m1`, `m2`: same architecture and tokenizer,
    different seeds, so every tensor differs (except the all-ones norm weights)."""
    from finetune.tiny_model import build_tiny_model

    dirs = {"base": tiny_model_dir}
    for seed, name in ((1, "m1"), (2, "m2")):
        dirs[name] = build_tiny_model(
            tmp_path_factory.mktemp(f"merge_{name}"), seed=seed, arch="llama"
        )
    return dirs
