"""An in-memory double of bittensor 11's ``Substrate`` seam, for offline SDK tests.

Inject it with ``bittensor.Subtensor(network, substrate=FakeSubstrate(...))``: the real SDK
code (metagraph decoding, raw-call composition, SetWeights preflight and conforming) runs
against it. It answers exactly the calls that path makes (read off bittensor 11.3's
``metagraph.fetch``, ``reads.identity.commitment``, ``reads.weights.weights``,
``intents.weights._preflight`` and ``Executor.submit_call``/``execute``) in the shapes the
RPC transport decodes to: ``Raw`` commitment payloads as ``"0x…"`` hex, stakes in rao.
Any other attribute the SDK asks for raises, so a new dependency shows up as a failure.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from bittensor.balance import Balance
from bittensor.result import ExtrinsicResult, chain_error_from_dispatch

RAO_PER_ALPHA = 10**9
COMMITMENTS_PALLET = 18
SPACE_LIMIT_EXCEEDED = {"Module": {"index": COMMITMENTS_PALLET, "error": 2}}
NOT_ALLOWED_COMMIT = {"Module": {"index": COMMITMENTS_PALLET, "error": 1}}


@dataclass
class FakeNeuron:
    hotkey: str
    coldkey: str
    stake_alpha: float = 0.0
    validator_permit: bool = False
    last_update: int = 0


@dataclass
class FakeSubstrate:
    """Chain state for one subnet plus a log of what the SDK sent."""

    netuid: int = 7
    block: int = 1000
    neurons: list[FakeNeuron] = field(default_factory=list)
    weights_rate_limit: int = 0
    weights_version: int = 0  # the subnet's WeightsVersionKey hyperparameter
    commitments: dict[str, dict] = field(default_factory=dict)
    weights: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    submitted: list[tuple[Any, str, dict]] = field(default_factory=list)
    fail_next_submit: dict | None = None  # a DispatchError payload for the next write
    hang: bool = False  # when True, block_number never answers (a stuck node)
    # When True, every read and write waits until it is set back to False: a node that stops
    # answering, then answers again. `delay_s` slows every answer down (a busy node).
    stall: bool = False
    delay_s: float = 0.0
    connects: int = 0
    token_symbols: dict[int, str] = field(default_factory=dict)

    # --- lifecycle and blocks -------------------------------------------------

    def balance(self, rao: int, netuid: int = 0) -> Balance:
        return Balance.from_rao(rao, netuid)

    async def connect(self) -> None:
        self.connects += 1

    async def _answer(self) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        while self.stall:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        return None

    async def block_number(self) -> int:
        await self._answer()
        if self.hang:
            await asyncio.sleep(3600)
        return self.block

    async def finalized_block_number(self) -> int:
        return self.block

    async def block_hash(self, block: int | None = None) -> str:
        await self._answer()
        return "0x" + f"{self.block if block is None else block:064x}"

    async def block_time(self) -> float:
        return 12.0

    async def spec_version(self) -> int:
        return 1

    # --- reads ------------------------------------------------------------------

    def _uid(self, hotkey: str) -> int | None:
        return next((i for i, n in enumerate(self.neurons) if n.hotkey == hotkey), None)

    async def query(self, module: str, name: str, params=None, block_hash=None) -> Any:
        await self._answer()
        params = list(params or [])
        answers = {
            ("SubtensorModule", "Uids"): lambda: self._uid(params[1]),
            ("SubtensorModule", "CommitRevealWeightsEnabled"): lambda: False,
            ("SubtensorModule", "WeightsSetRateLimit"): lambda: self.weights_rate_limit,
            ("SubtensorModule", "LastUpdate"): lambda: [n.last_update for n in self.neurons],
            ("SubtensorModule", "MinAllowedWeights"): lambda: 0,
            ("SubtensorModule", "MaxWeightsLimit"): lambda: 65535,
            ("SubtensorModule", "WeightsVersionKey"): lambda: self.weights_version,
            ("SubtensorModule", "SubnetEpochConsensus"): lambda: "Yuma",
            ("Commitments", "CommitmentOf"): lambda: self.commitments.get(params[1]),
        }
        if (module, name) not in answers:
            raise AssertionError(f"fake substrate has no storage {module}.{name}")
        return answers[(module, name)]()

    async def query_map(self, module: str, name: str, params=None, block_hash=None) -> list:
        await self._answer()
        if (module, name) == ("SubtensorModule", "TokenSymbol"):
            return []
        if (module, name) == ("Commitments", "CommitmentOf"):
            return list(self.commitments.items())
        if (module, name) == ("Commitments", "RevealedCommitments"):
            return []
        if (module, name) == ("SubtensorModule", "Weights"):
            return list(self.weights.items())
        raise AssertionError(f"fake substrate has no storage map {module}.{name}")

    async def runtime_call(self, api: str, method: str, params: list, block_hash=None) -> Any:
        await self._answer()
        if (api, method) != ("SubnetInfoRuntimeApi", "get_metagraph"):
            raise AssertionError(f"fake substrate has no runtime api {api}.{method}")
        if params != [self.netuid]:
            return None  # the chain answers None for a subnet that does not exist
        return {
            "netuid": self.netuid,
            "name": list(b"finetune"),
            "symbol": list(b"F"),
            "block": self.block,
            "tempo": 360,
            "last_step": self.block - 10,
            "blocks_since_last_step": 10,
            "owner_hotkey": "owner-hot",
            "owner_coldkey": "owner-cold",
            "network_registered_at": 1,
            "num_uids": len(self.neurons),
            "max_uids": 256,
            "hotkeys": [n.hotkey for n in self.neurons],
            "coldkeys": [n.coldkey for n in self.neurons],
            "active": [True] * len(self.neurons),
            "validator_permit": [n.validator_permit for n in self.neurons],
            "last_update": [n.last_update for n in self.neurons],
            "block_at_registration": [1] * len(self.neurons),
            "total_stake": [int(n.stake_alpha * RAO_PER_ALPHA) for n in self.neurons],
            "alpha_stake": [int(n.stake_alpha * RAO_PER_ALPHA) for n in self.neurons],
            "tao_stake": [0] * len(self.neurons),
        }

    # --- writes -----------------------------------------------------------------

    async def compose(self, call: Any) -> Any:
        return call  # the untouched Call(module, function, params): tests assert on it

    async def estimate_fee(self, call: Any, keypair: Any) -> Balance:
        return Balance.from_rao(0)

    async def submit(self, call: Any, keypair: Any, **options: Any) -> ExtrinsicResult:
        await self._answer()
        signer = keypair.ss58_address
        self.submitted.append((call, signer, options))
        if self.fail_next_submit is not None:
            error, self.fail_next_submit = chain_error_from_dispatch(self.fail_next_submit), None
            return ExtrinsicResult(success=False, message=error.message, error=error)
        if (call.module, call.function) == ("Commitments", "set_commitment"):
            return self._commit(call.params, signer)
        if (call.module, call.function) == ("SubtensorModule", "set_mechanism_weights"):
            uid = self._uid(signer)
            self.weights[uid] = list(zip(call.params["dests"], call.params["weights"], strict=True))
            self.neurons[uid].last_update = self.block
            return ExtrinsicResult(success=True, message="ok")
        raise AssertionError(f"fake substrate cannot dispatch {call.module}.{call.function}")

    def _commit(self, params: dict, signer: str) -> ExtrinsicResult:
        if self._uid(signer) is None:
            error = chain_error_from_dispatch(NOT_ALLOWED_COMMIT)
            return ExtrinsicResult(success=False, message=error.message, error=error)
        # What the RPC transport decodes CommitmentOf to: Raw payloads as 0x-hex text.
        fields = [
            {variant: "0x" + bytes(payload).hex()}
            for entry in params["info"]["fields"]
            for variant, payload in entry.items()
        ]
        self.commitments[signer] = {"block": self.block, "deposit": 0, "info": {"fields": fields}}
        return ExtrinsicResult(success=True, message="ok")

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"fake substrate does not implement {name!r}")
