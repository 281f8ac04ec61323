"""Chain access: the model-id commitment format and a small chain client with two backends.

`open_chain(spec, netuid=...)` returns a `ChainClient`: `BittensorChain` for a subtensor node
(``finney``, ``test``, ``local``, ``ws://…``) or `DevnetChain` for a local SQLite devnet
(``devnet:PATH``). `BittensorChain` (and so bittensor itself) is imported only when used.
"""

from finetune.chain.client import (
    CHAIN_SPEC_FORMS,
    ChainClient,
    MetagraphSnapshot,
    NeuronInfo,
    hotkey_address,
    open_chain,
)
from finetune.chain.deadline import CallExecutor, call_with_deadline
from finetune.chain.devnet import DevnetChain, devnet_block_hash
from finetune.chain.model_id import (
    MAX_COMMITMENT_BYTES,
    MAX_REPO_ID_CHARS,
    ModelId,
    Rejection,
    commitment_text,
    decode_commitment,
    parse_commitment,
    validate_repo_id,
)
from finetune.chain.wallets import WalletSettings, create_dev_wallet, load_wallet


def __getattr__(name: str):
    # Lazy: importing bittensor costs about a second; devnet-only users never pay it.
    if name == "BittensorChain":
        from finetune.chain.bittensor_backend import BittensorChain

        return BittensorChain
    raise AttributeError(f"module 'finetune.chain' has no attribute {name!r}")


__all__ = [
    "WalletSettings",
    "CHAIN_SPEC_FORMS",
    "MAX_COMMITMENT_BYTES",
    "MAX_REPO_ID_CHARS",
    "BittensorChain",
    "CallExecutor",
    "ChainClient",
    "DevnetChain",
    "MetagraphSnapshot",
    "ModelId",
    "NeuronInfo",
    "Rejection",
    "call_with_deadline",
    "create_dev_wallet",
    "commitment_text",
    "decode_commitment",
    "devnet_block_hash",
    "hotkey_address",
    "load_wallet",
    "open_chain",
    "parse_commitment",
    "validate_repo_id",
]
