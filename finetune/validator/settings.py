"""One settings model for the validator, read once at the entry point.

Every field has a description and its limits, so the command line (`finetune.validator.cli`)
documents and checks itself. Each field can also come from the environment with the
`FINETUNE_` prefix, `__` for a dot (`FINETUNE_WALLET__NAME`, `FINETUNE_INTERVALS__WEIGHTS_S`).
Everything is checked when the model is built, so a bad value stops the validator at start-up
(exit 2) instead of turning into every miner's failed evaluation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

import competitions
import constants
from finetune.chain import WalletSettings
from finetune.errors import UnknownIdError

_HOME = Path("~/.finetune")
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
DEVICE_FORMS = "auto, cpu, cuda or cuda:N"
HUB_FORMS = "hf or dir:PATH"
CHAIN_FORMS = "finney, test, local, ws://HOST:PORT, wss://HOST:PORT or devnet:PATH"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_chain_spec(spec: str) -> str:
    """`spec` if it has one of the chain forms (`CHAIN_FORMS`) and, for a devnet, its file
    exists; else ValueError saying which rule it breaks."""
    if spec in ("finney", "test", "local"):
        return spec
    for prefix in ("ws://", "wss://", "devnet:"):
        if spec.startswith(prefix):
            rest = spec[len(prefix):]
            if not rest.strip():
                raise ValueError(f"{prefix} needs {'a path' if prefix == 'devnet:' else 'a HOST:PORT'} after it")
            if prefix == "devnet:" and not Path(rest).expanduser().is_file():
                raise ValueError(f"devnet file {rest!r} does not exist; create it with "
                                 f"`python scripts/devnet.py init {rest}`")
            return spec
    raise ValueError(f"must be {CHAIN_FORMS}")


def check_device(device: str) -> str:
    """`device` if it has a known form and this machine has it; else ValueError saying why.

    `cuda` and `cuda:N` import torch (only then) to ask whether CUDA is usable.
    """
    device = device.strip().lower()
    if not _DEVICE.fullmatch(device):
        raise ValueError(f"must be {DEVICE_FORMS}")
    if not device.startswith("cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        raise ValueError("no usable CUDA device on this machine (torch.cuda.is_available() is false); "
                         "use cpu or auto")
    count = torch.cuda.device_count()
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        raise ValueError(f"this machine has {count} CUDA device(s): cuda:0 to cuda:{count - 1}")
    return device


def _positive(what: str = "") -> dict:
    """Field limits of a strictly positive, finite number."""
    return {"gt": 0, "allow_inf_nan": False, "json_schema_extra": {"metavar": what or "SECONDS"}}


class WandbSettings(BaseModel):
    """Weights & Biases logging (off unless a project is set)."""

    model_config = ConfigDict(frozen=True)

    project: str | None = Field(None, description="Weights & Biases project (default: none, no wandb)")
    entity: str | None = Field(None, description="Weights & Biases entity, a team or user (default: yours)")
    mode: Literal["online", "offline", "disabled"] = Field(
        "online", description="online, offline (runs written locally, sync later) or disabled")
    rounds_per_run: int = Field(100, ge=1, description="start a new wandb run after this many rounds",
                                json_schema_extra={"metavar": "N"})


class IntervalSettings(BaseModel):
    """How often the background jobs run."""

    model_config = ConfigDict(frozen=True)

    metagraph_sync_s: float = Field(constants.METAGRAPH_SYNC_S, description="seconds between metagraph syncs",
                                    **_positive())
    uid_check_s: float = Field(constants.UID_CHECK_INTERVAL_S,
                               description="seconds before a uid's commitment is checked again", **_positive())
    weights_s: float = Field(constants.WEIGHTS_INTERVAL_S,
                             description="seconds between weight settings (a failure is retried after 5 min)",
                             **_positive())
    cleanup_s: float = Field(constants.MODEL_CLEANUP_INTERVAL_S, description="seconds between disk clean-ups",
                             **_positive())
    idle_s: float = Field(30, description="pause of the eval loop when there is nothing to do", **_positive())


class StatusSettings(BaseModel):
    """The optional read-only status page (`python -m finetune.validator status` in a browser)."""

    model_config = ConfigDict(frozen=True)

    port: int | None = Field(None, ge=0, le=65535, description="serve the status page on this port "
                             "(default: none, no page)", json_schema_extra={"metavar": "PORT"})
    host: str = Field("127.0.0.1", description="address the status page binds to (keep it local; use an SSH "
                      "tunnel to look from elsewhere)", json_schema_extra={"metavar": "HOST"})


class ValidatorSettings(BaseSettings):
    """The validator's settings: flags overlaid on `FINETUNE_*` variables, checked at once."""

    # validate_default: the defaults pass the same checks (and `~` in the default paths is expanded).
    model_config = SettingsConfigDict(env_prefix="FINETUNE_", env_nested_delimiter="__", frozen=True,
                                      validate_default=True)

    wallet: WalletSettings = Field(WalletSettings(), description="the wallet whose hotkey signs the weights")
    chain: str = Field("finney", description="the chain to read and set weights on (forms below)",
                       json_schema_extra={"metavar": "SPEC"})
    weights_chain: str | None = Field(None, description="another endpoint for setting weights only "
                                      "(default: --chain)", json_schema_extra={"metavar": "SPEC"})
    netuid: int = Field(constants.NETUID, ge=0, description="subnet uid", json_schema_extra={"metavar": "N"})
    chain_timeout_s: float = Field(constants.CHAIN_CALL_TIMEOUT_S, description="deadline of every chain call",
                                   **_positive())
    hub: str = Field("hf", description="model store: hf (Hugging Face) or dir:PATH (a local folder store)",
                     json_schema_extra={"metavar": "SPEC"})
    schedule: str = Field("mainnet", description="competition schedule: mainnet, local, efficient-1gpu, "
                          "merging, seeds or seeds-local",
                          json_schema_extra={"metavar": "NAME"})
    model_dir: Path = Field(_HOME / "models", description="disk cache of downloaded models")
    state_path: Path = Field(_HOME / "validator" / "state.json", description="validator state file")
    data_dir: Path | None = Field(None, description="folder of local eval data files that override the remote "
                                  "sources (default: none)")
    device: str = Field("auto", description="auto (cuda if usable, else cpu), cpu, cuda or cuda:N",
                        json_schema_extra={"metavar": "DEVICE"})
    batch_tokens: int = Field(16384, ge=1, description="token budget of one eval batch (lower it on CUDA out of "
                              "memory; scores do not change)", json_schema_extra={"metavar": "N"})
    model_deadline_s: float = Field(constants.MODEL_EVAL_DEADLINE_S,
                                    description="hard deadline to score one model, loading included", **_positive())
    eval_samples: int | None = Field(
        None, ge=1, description="at most this many samples per eval task: faster, less precise (default: each "
        "task's own count)", json_schema_extra={"metavar": "N"})
    worker_memory_gb: float | None = Field(
        None, ge=0, allow_inf_nan=False, json_schema_extra={"metavar": "GB"},
        description="host memory one scoring worker may use, GiB; 0: no limit (default: 3/4 of RAM, at least 8)")
    min_free_gb: float = Field(constants.DISK_LOW_WATERMARK_BYTES / 1024**3, ge=0, allow_inf_nan=False,
                               description="refuse new downloads below this much free disk, GiB",
                               json_schema_extra={"metavar": "GB"})
    cleanup_grace_s: float = Field(constants.MODEL_CLEANUP_GRACE_S, ge=0, allow_inf_nan=False,
                                   description="keep unreferenced models this long",
                                   json_schema_extra={"metavar": "SECONDS"})
    offline: bool = Field(False, description="local dry run: bundled eval data, no weights set")
    dont_set_weights: bool = Field(False, description="score live models on live data but never set weights")
    max_rounds: int | None = Field(None, ge=1, description="stop after this many rounds, for tests and demos "
                                   "(default: run until stopped)", json_schema_extra={"metavar": "N"})
    heartbeat_path: Path | None = Field(None, description="file touched after every loop step, watched by "
                                        "scripts/start_validator.py (default: none)")
    log_level: str = Field("info", description="logging level: debug, info, warning, error or critical",
                           json_schema_extra={"metavar": "LEVEL"})
    log_format: Literal["auto", "table", "text", "json"] = Field(
        "auto", description="round reports: auto (a table on a terminal, plain lines off one, as under pm2 or "
        "systemd), table, text or json (one object per model per line)")
    tokenizer_dir: Path = Field(_HOME / "tokenizers", description="where fixed tokenizers (Xenova/gpt-4) are "
                                "downloaded once and kept; put the files there to run without the Hub")
    download_min_rate_mib_s: float = Field(
        constants.DOWNLOAD_MIN_RATE_BYTES_S / 1024**2, gt=0, allow_inf_nan=False,
        description="a model's download must average at least this rate, MiB/s, or it is cut off (its "
        "deadline: 2 min + size / rate)", json_schema_extra={"metavar": "MIBS"})
    status: StatusSettings = Field(StatusSettings(), description="the read-only status page")
    intervals: IntervalSettings = Field(IntervalSettings(), description="background job intervals")
    wandb: WandbSettings = Field(WandbSettings(), description="Weights & Biases logging")

    @field_validator("chain")
    @classmethod
    def _chain(cls, value: str) -> str:
        return check_chain_spec(value)

    @field_validator("weights_chain")
    @classmethod
    def _weights_chain(cls, value: str | None) -> str | None:
        return None if value is None else check_chain_spec(value)

    @field_validator("hub")
    @classmethod
    def _hub(cls, value: str) -> str:
        if value == "hf" or (value.startswith("dir:") and value[4:].strip()):
            return value
        raise ValueError("dir: needs a folder after it" if value == "dir:" else f"must be {HUB_FORMS}")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        try:
            competitions.get_schedule(value)
        except UnknownIdError as exc:
            raise ValueError(str(exc).split("; ", 1)[-1].replace("known:", "must be one of")) from None
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return check_device(value)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError("must be one of " + ", ".join(level.lower() for level in LOG_LEVELS))
        return value.upper()

    @field_validator("model_dir", "state_path", "data_dir", "heartbeat_path")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    @property
    def sets_weights(self) -> bool:
        """False under `--offline` or `--dont-set-weights`: the validator then needs no wallet."""
        return not (self.offline or self.dont_set_weights)

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


__all__ = ["CHAIN_FORMS", "LOG_LEVELS", "IntervalSettings", "ValidatorSettings", "WandbSettings",
           "check_chain_spec", "check_device"]
