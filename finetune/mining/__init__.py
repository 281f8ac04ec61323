"""Miner tooling: merge models, train under a budget, score locally, upload."""

from finetune.mining.merge import MergeReport, known_methods, merge_models

__all__ = ["MergeReport", "known_methods", "merge_models"]
