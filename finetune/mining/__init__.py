"""Miner tooling: train under a budget, merge models, score locally, upload; the seeds'
competitions' recipes (and their reproduction) and merge submissions."""

from finetune.mining.compare import Comparison, MineReport, compare_with_chain, decide, run_miner
from finetune.mining.merge import MergeReport, known_methods, merge_models
from finetune.mining.merge_submission import build_merge_submission, fetch_listed
from finetune.mining.recipe import RecipeSettings, Reproduction, Tolerance, reproduce, run_recipe
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
    "RecipeSettings",
    "Reproduction",
    "SftPair",
    "Tolerance",
    "TrainOptions",
    "TrainReport",
    "UploadReport",
    "UploadSettings",
    "build_merge_submission",
    "compare_with_chain",
    "decide",
    "describe_error",
    "encode_pairs",
    "fetch_listed",
    "known_methods",
    "load_pairs",
    "merge_models",
    "pairs_from_rows",
    "reproduce",
    "run_miner",
    "run_recipe",
    "run_upload",
    "task_pairs",
    "train_model",
    "upload_model",
]
