"""`ChainClient` over a real subtensor node, through the bittensor 11 SDK.

Uses the SDK's blocking client (``bittensor.Subtensor``). Each call runs on the client's
`CallExecutor` under its deadline, so all SDK use happens on one worker thread and a hung
node holds that one thread (later calls fail fast until the hung call returns). SDK failures
map to `finetune.errors` in one place (`_map_sdk_error`). Tests inject an in-memory
substrate with ``substrate=`` so the real SDK code (metagraph decoding, raw-call submission,
SetWeights preflight and conforming) runs offline.

After a hang the SDK client is kept, not rebuilt: its RPC session already reconnects and
resubmits on its own response timeout and redials after giving up, so the hung call returns
and the same client works again. Closing it while a call is still in flight would be worse:
a close that does not fail the pending request (during connect, say) stops the SDK's event
loop under it and strands the worker for good.

Not covered offline (needs a node): the RPC transport itself (runtime metadata, SCALE
encoding of the composed call, signing and inclusion), and SetWeights' commit-reveal path
(the test double reports commit-reveal off). Check those once against a testnet or localnet.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import bittensor as bt
from bittensor.result import BittensorError, ConnectionNotReady, ErrorCode, RpcConnectionError

from finetune.chain.client import MetagraphSnapshot, NeuronInfo
from finetune.chain.deadline import CallExecutor, call_with_deadline
from finetune.chain.model_id import commitment_text
from finetune.errors import (
    ChainError,
    ChainTimeout,
    ChainUnreachable,
    NotRegistered,
    RateLimited,
    SpaceLimitExceeded,
)

T = TypeVar("T")

_RETRY_BLOCKS = re.compile(r"retry in ~?(\d+) blocks?", re.IGNORECASE)


def _map_sdk_error(error: BaseException, what: str) -> BaseException:
    """Our error for an SDK or transport failure; other exceptions pass through unchanged."""
    if isinstance(error, (RpcConnectionError, ConnectionNotReady, ConnectionError, OSError)):
        return ChainUnreachable(f"{what}: chain unreachable: {error}", call=what)
    if isinstance(error, bt.ChainError):
        name = error.name or ""
        message = f"{what}: {error.message}"
        # The Commitments pallet refuses an unregistered hotkey with AccountNotAllowedCommit.
        if error.code is ErrorCode.NOT_REGISTERED or name == "AccountNotAllowedCommit":
            return NotRegistered(message, call=what, chain_error=name)
        if name == "SpaceLimitExceeded":
            return SpaceLimitExceeded(message, call=what, chain_error=name)
        if error.code is ErrorCode.RATE_LIMITED:
            match = _RETRY_BLOCKS.search(error.message)
            retry = int(match.group(1)) if match else None
            return RateLimited(message, retry_after_blocks=retry, call=what, chain_error=name)
        return ChainError(message, call=what, chain_error=name, code=error.code.value)
    if isinstance(error, BittensorError):
        return ChainError(f"{what}: {error}", call=what)
    return error


def _endpoint_name(network: str) -> str:
    """A network name, or an endpoint's host:port (a URL's path or userinfo may hold a key)."""
    if not network.startswith(("ws://", "wss://")):
        return network
    parts = urlsplit(network)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


class BittensorChain:
    """A subtensor node as a `ChainClient`.

    Args:
        network: ``finney``, ``test``, ``local`` or a ``ws://``/``wss://`` endpoint.
        netuid: the subnet.
        timeout_s: deadline of every call, connecting included.
        substrate: an SDK ``Substrate`` implementation to use instead of the RPC one
            (tests inject an in-memory double here).
        wait_for_finalization: wait for finality after inclusion on writes (slower).
    """

    def __init__(
        self,
        network: str,
        *,
        netuid: int,
        timeout_s: float = 60.0,
        substrate: Any = None,
        wait_for_finalization: bool = False,
    ) -> None:
        self.netuid = netuid
        self.timeout_s = timeout_s
        self._wait_for_finalization = wait_for_finalization
        # A raw endpoint is pinned (no fallback pool); named networks keep the SDK defaults.
        pinned = [] if network.startswith(("ws://", "wss://")) else None
        self._sub = bt.Subtensor(
            network, substrate=substrate, fallback_endpoints=pinned, archive_endpoints=pinned
        )
        self._calls = CallExecutor(_endpoint_name(network))

    def _run(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return call_with_deadline(
                fn, timeout_s=self.timeout_s, what=what, executor=self._calls
            )
        except ChainTimeout:  # a TimeoutError, hence an OSError: keep it as it is
            raise
        except (BittensorError, OSError) as error:
            raise _map_sdk_error(error, what) from error

    def _check(self, what: str, result: Any) -> None:
        if not result.success:
            error = result.error or bt.ChainError(result.message or "extrinsic failed")
            raise _map_sdk_error(error, what) from error

    def close(self) -> None:
        """Close the connection and let the call worker exit.

        Optional: the SDK closes the connection on garbage collection, and an idle worker
        exits on its own.
        """
        self._calls.close()
        self._sub.close()

    def current_block(self) -> int:
        """The chain head's block number."""
        return self._run("current_block", lambda: self._sub.block)

    def block_hash(self, block: int) -> str:
        """The 0x-hex hash of `block`."""
        # bittensor 11.3 has no public block-hash read; its substrate seam has one, run on
        # the SDK's own loop through the facade's single choke point.
        substrate = self._sub._client._substrate
        return self._run("block_hash", lambda: self._sub._call(substrate.block_hash(block)))

    def metagraph(self) -> MetagraphSnapshot:
        """All neurons with stake, permit and commitment, read at one block.

        Raises:
            ChainError: the subnet does not exist.
        """
        graph = self._run("metagraph", lambda: self._sub.subnets.metagraph(self.netuid))
        if graph is None:
            raise ChainError(f"subnet {self.netuid} does not exist", netuid=self.netuid)
        neurons = []
        for neuron in graph.neurons:
            commitment = graph.commitments.get(neuron.uid)
            data = commitment.data if commitment is not None and commitment.data else None
            neurons.append(
                NeuronInfo(
                    uid=neuron.uid,
                    hotkey=neuron.hotkey,
                    stake=float(neuron.total_stake.alpha),
                    validator_permit=bool(neuron.validator_permit),
                    commitment=commitment_text(data),
                    commitment_block=commitment.block if data is not None else None,
                )
            )
        return MetagraphSnapshot(block=graph.block, netuid=self.netuid, neurons=tuple(neurons))

    def publish_commitment(self, wallet: Any, data: str) -> None:
        """Publish `data` as this hotkey's commitment (one Raw field, hotkey-signed).

        Raises:
            ValueError: `data` is longer than 128 utf-8 bytes.
            NotRegistered, SpaceLimitExceeded, RateLimited, ChainError: the chain refused.
        """
        raw = data.encode("utf-8")
        if len(raw) > 128:
            raise ValueError(f"commitment is {len(raw)} bytes; one Raw field holds 128")
        # Bytes, not str: the SDK hex-decodes a str that starts with "0x".
        call = bt.calls.Commitments.set_commitment(
            netuid=self.netuid, info={"fields": [{f"Raw{len(raw)}": raw}]}
        )
        result = self._run(
            "publish_commitment",
            lambda: self._sub.submit_call(
                call,
                wallet,
                signer="hotkey",  # commitments are keyed by the signer; the default is coldkey
                wait_for_inclusion=True,
                wait_for_finalization=self._wait_for_finalization,
            ),
        )
        self._check("publish_commitment", result)

    def read_commitment(self, hotkey: str) -> tuple[str, int] | None:
        """The text and block of `hotkey`'s commitment, or None if it has none."""
        found = self._run(
            "read_commitment",
            lambda: self._sub.read("commitment", netuid=self.netuid, hotkey_ss58=hotkey),
        )
        if found is None or not found.data:
            return None
        return commitment_text(found.data), int(found.block)

    def set_weights(self, wallet: Any, weights: Mapping[int, float], *, version_key: int) -> None:
        """Set this validator's weights (the SDK clips, normalises and quantises them).

        Raises:
            ValueError: a weight is negative or not finite, or all are zero.
            NotRegistered, RateLimited, ChainError: the chain (or its preflight) refused.
        """
        clean = {int(uid): float(w) for uid, w in weights.items()}
        if any(not math.isfinite(w) or w < 0 for w in clean.values()):
            raise ValueError("weights must be finite and non-negative")
        if not any(w > 0 for w in clean.values()):
            raise ValueError("all weights are zero; nothing to set")
        intent = bt.SetWeights(netuid=self.netuid, weights=clean, version_key=version_key)
        result = self._run(
            "set_weights",
            lambda: self._sub.execute(
                intent, wallet, wait_for_finalization=self._wait_for_finalization
            ),
        )
        self._check("set_weights", result)

    def validator_weights(self) -> dict[int, dict[int, float]]:
        """Each validator uid's weight row, as fractions summing to 1."""
        return self._run("validator_weights", lambda: self._sub.read("weights", netuid=self.netuid))

    def weights_version(self) -> int:
        """The subnet's `WeightsVersionKey`: the lowest version key its weights accept."""
        item = bt.storage.SubtensorModule.WeightsVersionKey
        value = self._run("weights_version", lambda: self._sub.query(item, [self.netuid]))
        return int(value or 0)
