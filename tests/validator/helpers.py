"""Build a small local subnet for validator tests: devnet chain, directory hub, tiny models."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from rich.console import Console

from finetune.chain import DevnetChain, ModelId
from finetune.datasets import DataConfig
from finetune.storage import DirModelStore, ModelCache, content_hash, secure_hash
from finetune.validator.fetcher import StoreFetcher
from finetune.validator.loop import LoopConfig, Validator

VALIDATOR = "5ValidatorHotkey"


def publish_model(chain, store, model_dir: Path, *, hotkey: str, repo_id: str, competition_id: int) -> ModelId:
    """Upload and commit as a miner would (without the private/public dance)."""
    commit = store.upload(model_dir, repo_id, private=False)
    with tempfile.TemporaryDirectory() as tmp:
        digest = content_hash(store.download(repo_id, commit, Path(tmp) / "m"))
    model_id = ModelId.for_repo(repo_id, commit=commit, secure_hash=secure_hash(digest, hotkey),
                                competition_id=competition_id)
    chain.publish_commitment(hotkey, model_id.to_commitment())
    return model_id


def make_subnet(tmp_path: Path, miners: list[str]) -> tuple[DevnetChain, DirModelStore]:
    chain = DevnetChain(tmp_path / "devnet.sqlite", netuid=1, block_time_s=3600.0, commit_rate_limit=0,
                        weights_rate_limit=0)
    chain.register(VALIDATOR, stake=1000.0, validator_permit=True)
    for hotkey in miners:
        chain.register(hotkey)
    return chain, DirModelStore(tmp_path / "hub")


def make_validator(tmp_path: Path, chain, store, schedule, **overrides) -> Validator:
    evaluate = overrides.pop("evaluate", None)
    cache = ModelCache(tmp_path / "models", min_free_bytes=overrides.pop("min_free_bytes", 0), grace_period_s=3600,
                       **({"disk_usage": overrides.pop("disk_usage")} if "disk_usage" in overrides else {}))
    config = LoopConfig(state_path=tmp_path / "state.json", data=DataConfig(offline=True), max_samples=2,
                        genesis_block=0, window_blocks=360, idle_s=0.1, **overrides)
    kwargs = {"evaluate": evaluate} if evaluate is not None else {}
    return Validator(config=config, chain=chain, schedule=schedule, fetcher=StoreFetcher(store, cache),
                     wallet=VALIDATOR, cleanup=lambda keep: cache.cleanup(keep),
                     console=Console(file=io.StringIO(), width=200), **kwargs)
