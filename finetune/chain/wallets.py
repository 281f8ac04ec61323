"""Bittensor wallets on disk: load one, or create an unencrypted one for local devnets.

bittensor is imported inside the functions, so importing `finetune.chain` stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from finetune.errors import ConfigError

DEFAULT_WALLET_PATH = "~/.bittensor/wallets"


class WalletSettings(BaseModel):
    """The `--wallet.*` flags shared by the validator and the miner tools."""

    name: str = Field("default", description="bittensor wallet (coldkey) name")
    hotkey: str = Field("default", description="hotkey name inside the wallet")
    path: Path = Field(Path(DEFAULT_WALLET_PATH), description="folder holding the wallets")

    def load(self) -> Any:
        """The wallet these settings name (see `load_wallet`)."""
        return load_wallet(self.name, self.hotkey, self.path)


def load_wallet(name: str, hotkey: str = "default", path: str | Path = DEFAULT_WALLET_PATH) -> Any:
    """The bittensor ``Wallet`` `name`/`hotkey` under `path`.

    Raises:
        ConfigError: its hotkey file does not exist.
    """
    import bittensor as bt

    wallet = bt.Wallet(name=name, hotkey=hotkey, path=str(Path(path).expanduser()))
    if not wallet.hotkey_file.exists_on_device():
        raise ConfigError(
            f"no hotkey file at {wallet.hotkey_file.path}; check --wallet.name, "
            "--wallet.hotkey and --wallet.path"
        )
    return wallet


def create_dev_wallet(
    name: str, hotkey: str = "default", path: str | Path = DEFAULT_WALLET_PATH
) -> Any:
    """Create (or reuse) a wallet whose coldkey and hotkey have NO password. Devnets only.

    Keys that already exist are kept, so running this twice gives the same addresses.

    Returns:
        The bittensor ``Wallet``.
    """
    import bittensor as bt

    wallet = bt.Wallet(name=name, hotkey=hotkey, path=str(Path(path).expanduser()))
    if not wallet.coldkeypub_file.exists_on_device():
        wallet.create_new_coldkey(use_password=False, suppress=True)
    if not wallet.hotkey_file.exists_on_device():
        wallet.create_new_hotkey(use_password=False, suppress=True)
    return wallet
