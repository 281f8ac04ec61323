"""Sync windows and the data seed every validator derives from the chain (SPEC §6)."""

from __future__ import annotations

import hashlib
import logging

from constants import SUBNET_GENESIS_BLOCK, SYNC_WINDOW_BLOCKS

logger = logging.getLogger(__name__)

_HEX = frozenset("0123456789abcdef")


def sync_window_start(
    block: int, genesis: int = SUBNET_GENESIS_BLOCK, window: int = SYNC_WINDOW_BLOCKS
) -> int:
    """First block of the sync window containing `block` (windows count from `genesis`).

    Raises:
        ValueError: `window` is not positive.
    """
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    return genesis + ((block - genesis) // window) * window


def window_seed(block_hash_hex: str) -> int:
    """Seed = int(SHA-256(hex string of the window's first block hash)).

    The hash is hashed in its canonical chain form, lower case with a `0x` prefix, so clients
    that drop the prefix or change the case still agree.

    Returns:
        A 256-bit non-negative int. Loaders derive their own RNGs from it
        (`random.Random(seed ^ task_constant)`); reduce it (`% 2**32`) for numpy or torch.

    Raises:
        ValueError: not a hex string (None included: a node may answer None for a block it
            does not have).
    """
    if not isinstance(block_hash_hex, str):
        raise ValueError(f"not a hex block hash: {block_hash_hex!r}")
    text = block_hash_hex.strip().lower()
    digits = text[2:] if text.startswith("0x") else text
    if not digits or not set(digits) <= _HEX:
        raise ValueError(f"not a hex block hash: {block_hash_hex!r}")
    return int(hashlib.sha256(f"0x{digits}".encode()).hexdigest(), 16)


def fallback_seed(block: int) -> int:
    """Deterministic seed for a window whose block hash could not be read (**Ours**: never None).

    Pass the window's first block, so every validator that fails the read agrees.
    """
    logger.warning("block hash unavailable: using the fallback seed of block %d", block)
    return int(hashlib.sha256(f"finetune-fallback-seed:{block}".encode()).hexdigest(), 16)


__all__ = ["fallback_seed", "sync_window_start", "window_seed"]
