"""Model storage: hashing, model stores (the Hub, a local folder), the disk cache, model checks.

Imports only `finetune.competition` and `finetune.errors` from this project; `huggingface_hub`,
`torch` and `transformers` are imported lazily by the functions that need them.
"""

from finetune.storage.cache import ModelCache
from finetune.storage.checks import (
    check_model_dir,
    check_revision,
    model_dir_violations,
    verify_hashes,
)
from finetune.storage.dir_store import DirModelStore
from finetune.storage.files import (
    ALLOWED_FILE_PATTERNS,
    is_allowed_file,
    is_safe_file_name,
    validate_repo_id,
    validate_revision,
)
from finetune.storage.hashing import content_hash, secure_hash
from finetune.storage.hf_store import HfModelStore
from finetune.storage.norms import NormReport, check_weight_norms, measure_weight_norms
from finetune.storage.records import RemoteFile, RevisionInfo, SafetensorsSummary
from finetune.storage.store import ModelStore, open_store

__all__ = [
    "ALLOWED_FILE_PATTERNS",
    "DirModelStore",
    "HfModelStore",
    "ModelCache",
    "ModelStore",
    "NormReport",
    "RemoteFile",
    "RevisionInfo",
    "SafetensorsSummary",
    "check_model_dir",
    "check_revision",
    "check_weight_norms",
    "content_hash",
    "is_allowed_file",
    "is_safe_file_name",
    "measure_weight_norms",
    "model_dir_violations",
    "open_store",
    "secure_hash",
    "validate_repo_id",
    "validate_revision",
    "verify_hashes",
]
