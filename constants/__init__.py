"""Project-wide constants: chain facts, timings and scoring parameters.

Plain values with the reason for each. Nothing here reads the environment; operators change
timings through the settings model at the entry point, which takes its defaults from here.
"""

from __future__ import annotations

from finetune import __version__, version_key

# --- Chain facts -------------------------------------------------------------------------
NETUID = 37  # the subnet this project serves on mainnet ("finetuning")
SUBNET_GENESIS_BLOCK = 3_138_611  # block at which subnet 37 was registered; windows count from it
BLOCK_TIME_S = 12  # target seconds per block on the Bittensor chain
WEIGHTS_VERSION_KEY = version_key(__version__)  # sent with every set_weights (v11 defaults to 0)

# --- Commitment layout (SPEC §2) ---------------------------------------------------------
COMMITMENT_MAX_BYTES = 128  # one raw commitment field
HF_COMMIT_LENGTH = 40  # hex characters of a Hugging Face commit sha
SECURE_HASH_LENGTH = 44  # base64 of a SHA-256 digest
COMPETITION_ID_MAX_CHARS = 4  # room reserved for the competition id in the text form
# SPEC §2: 128 - 40 - 44 - 2 - 4 = 38 characters left for the "namespace/name" repo id.
MAX_REPO_ID_LENGTH = (
    COMMITMENT_MAX_BYTES - HF_COMMIT_LENGTH - SECURE_HASH_LENGTH - 2 - COMPETITION_ID_MAX_CHARS
)

# --- Cross-validator agreement (SPEC §6) -------------------------------------------------
SYNC_WINDOW_BLOCKS = 360  # ~72 min: each competition is evaluated once per window

# --- Scoring (SPEC §5) -------------------------------------------------------------------
EMA_ALPHA = 0.9  # past weight in W <- a*W + (1-a)*step; an ousted winner fades in ~17 rounds
WEIGHT_THRESHOLD = 0.18  # normalised share below which a uid gets 0; a new winner needs 2 wins
KEEP_TOP_MODELS = 3  # models carried to the next round besides newly updated ones
EVAL_HISTORY_LENGTH = 3  # results remembered per hotkey per competition (retry rule)
FAILED_EVAL_RETRIES = 1  # a model whose evaluations all failed is re-evaluated this many times

# --- Validator timings (SPEC §8) ---------------------------------------------------------
MODEL_EVAL_DEADLINE_S = 720  # hard deadline of one model's scoring in its worker process
WEIGHTS_INTERVAL_S = 3600  # set weights about hourly
WEIGHTS_RETRY_S = 5 * 60  # after a failed set_weights, try again this soon
METAGRAPH_SYNC_S = 20 * 60  # refresh the metagraph this often
UID_CHECK_INTERVAL_S = 20 * 60  # check one uid's commitment at most this often
MODEL_CLEANUP_INTERVAL_S = 30 * 60  # how often unreferenced model snapshots are looked for
MODEL_CLEANUP_GRACE_S = 6 * 60 * 60  # an unreferenced snapshot is kept this long before deletion
CHAIN_CALL_TIMEOUT_S = 60  # every chain call is interrupted after this long
# Post-download checks (hash, headers, config, norms) run in a child process under these
# limits: a 20 GiB model hashes and has its norms read in well under a minute.
CHECK_DEADLINE_S = 600
CHECK_MEMORY_BYTES = 2 * 1024**3
# A check that took the whole validator down (power cut, kernel OOM killer) is retried once;
# the second time the revision is rejected (`check_crashed`), or it would do so on every start.
MAX_INTERRUPTED_CHECKS = 2
HTTP_TIMEOUT_S = 30  # every HTTP call (Hub API, datasets-server) has this timeout

# --- Disk (SPEC §8, ours) ----------------------------------------------------------------
DISK_LOW_WATERMARK_BYTES = 50 * 1024**3  # no new download starts below this much free disk

# --- Model downloads (ours) --------------------------------------------------------------
# One model's download must finish within DOWNLOAD_BASE_S + bytes / DOWNLOAD_MIN_RATE_BYTES_S,
# or a store that drips bytes holds the validator forever. The base covers connecting,
# redirects and the small files; the rate is far below what the Hub's CDN serves a data-centre
# validator (hundreds of MiB/s), so only a stalled or dripping transfer reaches it. A 20 GiB
# model gets 120 s + 1024 s, about 19 min.
DOWNLOAD_BASE_S = 120
DOWNLOAD_MIN_RATE_BYTES_S = 20 * 1024**2

# --- Weights of other validators (SPEC §8) -----------------------------------------------
HIGH_STAKE_VALIDATOR_MIN_STAKE = 100_000.0  # validators with this much stake are "high stake"
HIGH_STAKE_WEIGHT_MIN = 0.01  # a uid they weight at least this much (of their total) is looked at again
HIGH_STAKE_REEVAL_BLOCKS = 1200  # ... when it was not evaluated in this many blocks (as the reference)
# The reference stops admitting updated models while this many are pending or kept (3 kept per
# competition x 3 competitions + 7); the rest wait for later rounds.
UPDATED_MODELS_LIMIT = 16

__all__ = [
    "BLOCK_TIME_S",
    "CHAIN_CALL_TIMEOUT_S",
    "CHECK_DEADLINE_S",
    "CHECK_MEMORY_BYTES",
    "COMMITMENT_MAX_BYTES",
    "COMPETITION_ID_MAX_CHARS",
    "DISK_LOW_WATERMARK_BYTES",
    "DOWNLOAD_BASE_S",
    "DOWNLOAD_MIN_RATE_BYTES_S",
    "EMA_ALPHA",
    "EVAL_HISTORY_LENGTH",
    "FAILED_EVAL_RETRIES",
    "HF_COMMIT_LENGTH",
    "HIGH_STAKE_VALIDATOR_MIN_STAKE",
    "HIGH_STAKE_REEVAL_BLOCKS",
    "HIGH_STAKE_WEIGHT_MIN",
    "HTTP_TIMEOUT_S",
    "KEEP_TOP_MODELS",
    "MAX_INTERRUPTED_CHECKS",
    "MAX_REPO_ID_LENGTH",
    "METAGRAPH_SYNC_S",
    "MODEL_CLEANUP_GRACE_S",
    "MODEL_CLEANUP_INTERVAL_S",
    "MODEL_EVAL_DEADLINE_S",
    "NETUID",
    "SECURE_HASH_LENGTH",
    "SUBNET_GENESIS_BLOCK",
    "SYNC_WINDOW_BLOCKS",
    "UID_CHECK_INTERVAL_S",
    "UPDATED_MODELS_LIMIT",
    "WEIGHTS_INTERVAL_S",
    "WEIGHTS_RETRY_S",
    "WEIGHTS_VERSION_KEY",
    "WEIGHT_THRESHOLD",
]
