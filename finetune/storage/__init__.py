"""Model storage: hashing, model stores (the Hub, a local folder), the disk cache, model checks.

Imports only `finetune.competition`, `finetune.errors` and `constants` from this project;
`huggingface_hub`, `torch` and `transformers` are imported lazily by the functions that need them.
Downloads are bounded by `finetune.storage.transfer`: listed sizes and hashes are enforced while
streaming, under a deadline that scales with the model's size.
"""

from finetune.storage.cache import ModelCache
from finetune.storage.checks import (
    check_loadable,
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
from finetune.storage.hashing import content_hash, hashed_files, reference_files, secure_hash
from finetune.storage.hf_store import HfModelStore
from finetune.storage.norms import NormReport, check_weight_norms, measure_weight_norms
from finetune.storage.records import RemoteFile, RevisionInfo, SafetensorsSummary
from finetune.storage.store import ModelStore, open_store
from finetune.storage.transfer import Deadline, download_deadline_s

__all__ = [
    "ALLOWED_FILE_PATTERNS",
    "Deadline",
    "DirModelStore",
    "HfModelStore",
    "ModelCache",
    "ModelStore",
    "NormReport",
    "RemoteFile",
    "RevisionInfo",
    "SafetensorsSummary",
    "check_loadable",
    "check_model_dir",
    "check_revision",
    "check_weight_norms",
    "content_hash",
    "download_deadline_s",
    "hashed_files",
    "is_allowed_file",
    "is_safe_file_name",
    "measure_weight_norms",
    "model_dir_violations",
    "open_store",
    "reference_files",
    "secure_hash",
    "validate_repo_id",
    "validate_revision",
    "verify_hashes",
]
