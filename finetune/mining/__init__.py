"""Miner tooling: train under a budget, merge models, score locally, upload."""

from finetune.mining.compare import Comparison, MineReport, compare_with_chain, decide, run_miner
from finetune.mining.merge import MergeReport, known_methods, merge_models
from finetune.mining.settings import MinerSettings, UploadSettings
from finetune.mining.sft_data import (
    EncodedExample,
    SftPair,
    encode_pairs,
    load_pairs,
    pairs_from_rows,
    task_pairs,
)
from finetune.mining.train import TrainOptions, TrainReport, train_model
from finetune.mining.upload import UploadReport, describe_error, run_upload, upload_model

__all__ = [
    "Comparison",
    "EncodedExample",
    "MergeReport",
    "MineReport",
    "MinerSettings",
    "SftPair",
    "TrainOptions",
    "TrainReport",
    "UploadReport",
    "UploadSettings",
    "compare_with_chain",
    "decide",
    "describe_error",
    "encode_pairs",
    "known_methods",
    "load_pairs",
    "merge_models",
    "pairs_from_rows",
    "run_miner",
    "run_upload",
    "task_pairs",
    "train_model",
    "upload_model",
]
