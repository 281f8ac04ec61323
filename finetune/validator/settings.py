"""One settings model for the validator, read once at the entry point.

Flags keep the dotted names operators know (`--wallet.name`, `--netuid`); every field can also
come from the environment with the `FINETUNE_` prefix (`FINETUNE_WALLET__NAME`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

import constants
from finetune.chain import WalletSettings

_HOME = Path("~/.finetune").expanduser()


class WandbSettings(BaseModel):
    project: str | None = Field(None, description="Weights & Biases project; unset = no wandb")
    entity: str | None = Field(None, description="Weights & Biases entity (team or user)")
    mode: str = Field("online", description="wandb mode: online, offline or disabled")
    rounds_per_run: int = Field(100, description="start a new wandb run after this many rounds")


class IntervalSettings(BaseModel):
    metagraph_sync_s: float = Field(constants.METAGRAPH_SYNC_S, description="seconds between metagraph syncs")
    uid_check_s: float = Field(constants.UID_CHECK_INTERVAL_S, description="seconds before a uid's commitment is re-checked")
    weights_s: float = Field(constants.WEIGHTS_INTERVAL_S, description="seconds between weight settings")
    cleanup_s: float = Field(constants.MODEL_CLEANUP_INTERVAL_S, description="seconds between disk clean-ups")
    idle_s: float = Field(30, description="pause of the eval loop when there is nothing to do")


class ValidatorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FINETUNE_",
        env_nested_delimiter="__",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_prog_name="neurons/validator.py",
    )

    wallet: WalletSettings = WalletSettings()
    chain: str = Field("finney", description="finney | test | local | ws://HOST:PORT | devnet:PATH")
    weights_chain: str | None = Field(None, description="separate endpoint for setting weights (default: --chain)")
    netuid: int = Field(constants.NETUID, description="subnet uid")
    chain_timeout_s: float = Field(constants.CHAIN_CALL_TIMEOUT_S, description="deadline of every chain call")
    hub: str = Field("hf", description="model store: hf | dir:PATH")
    schedule: str = Field("mainnet", description="competition schedule: mainnet | local")
    model_dir: Path = Field(_HOME / "models", description="disk cache of downloaded models")
    state_path: Path = Field(_HOME / "validator" / "state.json", description="validator state file")
    data_dir: Path | None = Field(None, description="local eval data files overriding remote sources")
    device: str = Field("auto", description="cuda | cpu | auto")
    batch_tokens: int = Field(16384, description="token budget of one eval batch")
    model_deadline_s: float = Field(constants.MODEL_EVAL_DEADLINE_S, description="hard deadline to score one model (load included)")
    max_samples: int | None = Field(None, description="cap on samples per task (smaller, faster, less precise)")
    worker_memory_gb: float | None = Field(
        None, description="host memory one scoring worker may use, GiB (default: 3/4 of RAM, at least 8; 0: no limit)")
    min_free_gb: float = Field(constants.DISK_LOW_WATERMARK_BYTES / 1024**3, description="refuse new downloads below this much free disk")
    cleanup_grace_s: float = Field(constants.MODEL_CLEANUP_GRACE_S, description="keep unreferenced models this long")
    offline: bool = Field(False, description="local dry run: bundled eval data, no weights set")
    max_rounds: int | None = Field(None, description="stop after this many rounds (for tests and demos)")
    heartbeat_path: Path | None = Field(None, description="file touched after every loop step")
    log_level: str = Field("INFO", description="logging level")
    intervals: IntervalSettings = IntervalSettings()
    wandb: WandbSettings = WandbSettings()

    def worker_memory_bytes(self) -> int | None:
        if self.worker_memory_gb is None:
            from finetune.validator.isolation import default_worker_memory_bytes

            return default_worker_memory_bytes()
        return int(self.worker_memory_gb * 1024**3) or None

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
