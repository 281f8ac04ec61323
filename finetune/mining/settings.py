"""Settings of the miner tools, read once at the entry point.

Flags keep the dotted names operators know (``--wallet.name``, ``--netuid``); every field can
also come from the environment with the ``FINETUNE_`` prefix (``FINETUNE_WALLET__NAME``,
``FINETUNE_MAX_HOURS``). Parse with `parse_settings`, which reads the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

from finetune.chain import WalletSettings

S = TypeVar("S", bound=BaseSettings)


class ChainSettings(BaseSettings):
    """Where a model is committed: chain, subnet, store, schedule. Shared by both tools."""

    model_config = SettingsConfigDict(
        env_prefix="FINETUNE_",
        env_nested_delimiter="__",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        # --help without pydantic's clutter: no `{int,null}` types, no `--wallet JSON` flag.
        cli_hide_none_type=True,
        cli_avoid_json=True,
    )

    wallet: WalletSettings = WalletSettings()
    chain: str = Field("finney", description="finney, test, local, ws://HOST:PORT, wss://HOST:PORT or devnet:PATH")
    netuid: int = Field(37, description="subnet uid")
    chain_timeout_s: float = Field(60, description="deadline of every chain call")
    hub: str = Field("hf", description="model store: hf (Hugging Face) or dir:PATH (a local folder store)")
    schedule: str = Field("mainnet", description="competition schedule: mainnet, local, efficient-1gpu, merging, seeds or seeds-local")
    log_level: str = Field("INFO", description="logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL")


class UploadSettings(ChainSettings):
    """Push a model to the model store, then commit it on chain under your hotkey (docs/miner.md)."""

    model_config = SettingsConfigDict(cli_prog_name="scripts/upload_model.py")

    model: Path = Field(description="local model directory (safetensors, config, tokenizer)")
    repo: str = Field(description="Hub repo id NAMESPACE/NAME (at most 38 characters)")
    competition: str = Field(description="competition name or id to enter")


class MinerSettings(ChainSettings):
    """Fine-tune a model for a competition, score it like a validator, upload it if it wins."""

    model_config = SettingsConfigDict(cli_prog_name="neurons/miner.py")

    model: Path = Field(description="base model directory (safetensors) to fine-tune")
    competition: str = Field(description="competition name or id to train for")
    out: Path = Field(description="output folder: checkpoints/, best/ and best.json")
    data: list[str] = Field(
        default_factory=list,
        description="training data: .jsonl files or Hub dataset ids (Dolly, OASST1, LIMA, "
        "chat messages, prompt/response rows); repeat the flag for several",
    )
    data_rows: int | None = Field(None, description="read at most this many rows per --data source")
    tasks: list[str] | None = Field(
        None,
        description="eval loaders to draw training pairs from (e.g. word_sorting, dyck); "
        "default: the competition's reference-loss tasks; [] for none",
    )
    task_samples: int = Field(2000, description="training pairs drawn per --tasks loader")
    max_hours: float = Field(24.0, description="wall-clock training budget, summed over resumes")
    max_steps: int | None = Field(None, description="stop after this many optimiser steps")
    epochs: float = Field(1.0, description="passes over the data (when --max-steps is unset)")
    lr: float = Field(2e-5, description="peak learning rate (cosine decay, linear warm-up)")
    warmup: float = Field(0.03, description="warm-up: fraction of the steps (<1) or a step count")
    batch_size: int = Field(4, ge=1, description="sequences per device per step")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory")
    lora: bool = Field(False, description="train LoRA adapters; merged into the weights at the end")
    lora_r: int = Field(16, description="LoRA rank")
    lora_alpha: int = Field(32, description="LoRA alpha")
    eval_every: int = Field(200, description="score with the validator's code every N steps (0: only at the end)")
    eval_samples: int | None = Field(None, ge=1, description="samples per eval task (default: the task's own count)")
    eval_seed: int = Field(0, description="seed of the local eval data (training data uses another)")
    save_every: int = Field(500, description="checkpoint every N steps (for --resume)")
    resume: bool = Field(False, description="resume from the last checkpoint in --out")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda or cuda:N")
    batch_tokens: int = Field(8192, ge=1, description="token budget of one eval batch")
    offline: bool = Field(False, description="eval and task data from local/bundled files only")
    data_dir: Path | None = Field(None, description="local eval data files overriding remote sources")
    seed: int = Field(42, description="training seed (data order, LoRA init)")
    upload_if_better: bool = Field(False, description="upload out/best when it beats the chain's best")
    repo: str | None = Field(None, description="Hub repo id for --upload-if-better")
    max_candidates: int = Field(3, ge=1, description="chain models scored for --upload-if-better")
    progress: bool = Field(
        True, description="a progress bar of the training against --max-hours, on a terminal (--no-progress: none)"
    )


def parse_settings(cls: type[S], argv: list[str] | None = None) -> S:
    """Build settings from flags (and ``FINETUNE_*`` variables); ``--help`` lists every field.

    Args:
        cls: `MinerSettings` or `UploadSettings`.
        argv: the flags (None: ``sys.argv[1:]``).

    Raises:
        SystemExit: bad or missing flags, with status 2 after one line on stderr naming every
            bad flag (unknown flags: argparse prints the usage).
    """
    try:
        return CliApp.run(cls, cli_args=argv)
    except ValidationError as error:
        problems = "; ".join(
            "--" + ".".join(str(part).replace("_", "-") for part in e["loc"]) + ": " + e["msg"].lower()
            for e in error.errors()
        )
        print(f"error: {problems}", file=sys.stderr)
        raise SystemExit(2) from None


__all__ = ["ChainSettings", "MinerSettings", "UploadSettings", "WalletSettings", "parse_settings"]
