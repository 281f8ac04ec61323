"""The chain interface the validator and miner use, and its records.

Two backends implement `ChainClient`: `BittensorChain` (a real subtensor node, through the
bittensor 11 SDK) and `DevnetChain` (a SQLite file several local processes share). Pick one
with `open_chain`. Call deadlines are in `finetune.chain.deadline`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from finetune.errors import ConfigError

CHAIN_SPEC_FORMS = "finney | test | local | ws://HOST:PORT | wss://HOST:PORT | devnet:PATH"


@dataclass(frozen=True)
class NeuronInfo:
    """One registered neuron (uid) of the subnet.

    Attributes:
        uid: position in the metagraph.
        hotkey: ss58 address of the neuron's hotkey.
        stake: total stake, in alpha of this subnet.
        validator_permit: whether the chain lets it set weights that count.
        commitment: the raw commitment text it published, or None if none.
        commitment_block: the block that commitment was published at (None with no
            commitment). This is the model's submission block.
    """

    uid: int
    hotkey: str
    stake: float
    validator_permit: bool
    commitment: str | None = None
    commitment_block: int | None = None


@dataclass(frozen=True)
class MetagraphSnapshot:
    """Every neuron of one subnet, read at one block (ordered by uid)."""

    block: int
    netuid: int
    neurons: tuple[NeuronInfo, ...]

    @property
    def uids(self) -> tuple[int, ...]:
        return tuple(n.uid for n in self.neurons)

    @property
    def hotkeys(self) -> tuple[str, ...]:
        return tuple(n.hotkey for n in self.neurons)

    def by_hotkey(self, hotkey: str) -> NeuronInfo | None:
        """The neuron registered under `hotkey`, or None."""
        return next((n for n in self.neurons if n.hotkey == hotkey), None)

    def by_uid(self, uid: int) -> NeuronInfo | None:
        """The neuron at `uid`, or None."""
        return next((n for n in self.neurons if n.uid == uid), None)


@runtime_checkable
class ChainClient(Protocol):
    """What the validator and miner need from a chain. Every call honours a deadline.

    Errors (all from `finetune.errors`): `ChainTimeout` when a call overruns its deadline
    (and, at once, for a call made while an earlier one is still outstanding past its own),
    `ChainUnreachable` when the endpoint cannot be reached, `NotRegistered` when the
    signing hotkey is not on the subnet, `RateLimited` (with ``retry_after_blocks`` when
    known) and `SpaceLimitExceeded` for chain limits, `ChainError` for anything else.

    A ``wallet`` is a bittensor ``Wallet`` or anything with ``.hotkey.ss58_address`` that
    the SDK can sign with; the devnet only reads the hotkey address (a plain ss58 string
    works there too).
    """

    netuid: int

    def current_block(self) -> int: ...

    def block_hash(self, block: int) -> str: ...

    def metagraph(self) -> MetagraphSnapshot: ...

    def publish_commitment(self, wallet: Any, data: str) -> None: ...

    def read_commitment(self, hotkey: str) -> tuple[str, int] | None: ...

    def set_weights(
        self, wallet: Any, weights: Mapping[int, float], *, version_key: int
    ) -> None: ...

    def validator_weights(self) -> dict[int, dict[int, float]]: ...

    def weights_version(self) -> int: ...


def hotkey_address(wallet: Any) -> str:
    """The hotkey ss58 address of a wallet, a keypair/signer, or a plain address string.

    Raises:
        ConfigError: the object carries no hotkey address.
    """
    if isinstance(wallet, str):
        return wallet
    hotkey = getattr(wallet, "hotkey", None)
    address = getattr(hotkey, "ss58_address", None) or getattr(wallet, "ss58_address", None)
    if not isinstance(address, str):
        raise ConfigError(f"cannot find a hotkey address on {type(wallet).__name__!r}")
    return address


def open_chain(spec: str, *, netuid: int, timeout_s: float = 60.0) -> ChainClient:
    """Open a chain client from a spec string.

    Args:
        spec: ``finney``, ``test``, ``local``, a ``ws://`` or ``wss://`` endpoint, or
            ``devnet:PATH`` (an existing devnet file, see ``scripts/devnet.py init``).
        netuid: the subnet.
        timeout_s: deadline of every chain call.

    Returns:
        A `ChainClient`. Connecting is lazy: an unreachable node fails on the first call.

    Raises:
        ConfigError: the spec has none of the forms above, or the devnet file is missing.
    """
    if spec.startswith("devnet:"):
        from finetune.chain.devnet import DevnetChain

        path = Path(spec.removeprefix("devnet:"))
        if not path.is_file():
            raise ConfigError(
                f"devnet file {str(path)!r} does not exist; create it with "
                f"`python scripts/devnet.py init {path}`"
            )
        return DevnetChain(path, netuid=netuid, timeout_s=timeout_s, create=False)
    if spec in ("finney", "test", "local") or spec.startswith(("ws://", "wss://")):
        from finetune.chain.bittensor_backend import BittensorChain

        return BittensorChain(spec, netuid=netuid, timeout_s=timeout_s)
    raise ConfigError(f"unknown chain {spec!r}; expected one of: {CHAIN_SPEC_FORMS}")
