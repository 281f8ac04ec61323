"""The advantage of an earlier upload (SPEC §5): linear decay from `start` to `end`."""

from __future__ import annotations

from finetune.competition import EpsilonSpec


def epsilon(spec: EpsilonSpec, block_now: int, model_block: int) -> float:
    """ε for a model uploaded at `model_block`, seen at `block_now`.

    ε = start − min(max(block_now − model_block, 0) / decay_blocks, 1) × (start − end):
    `start` for a fresh upload (or one "from the future"), `end` once `decay_blocks` have passed.

    Args:
        spec: the competition's epsilon settings.
        block_now: the current block.
        model_block: the block of the model's commitment.

    Returns:
        The fraction by which the earlier model's score is reduced before comparing.
    """
    age = max(block_now - model_block, 0)
    progress = min(age / spec.decay_blocks, 1.0)
    return spec.start - progress * (spec.start - spec.end)


__all__ = ["epsilon"]
