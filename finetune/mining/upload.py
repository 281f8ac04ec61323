"""Upload a model and commit it on chain in the order that prevents front-running (SPEC §3).

1. Check everything that can be checked locally: the repo id fits a commitment, the hotkey
   is registered, the model meets the competition's constraints (the validator's own checks).
2. Push the repo **private** (a public repo would let anyone copy it before our commitment).
3. Download the pinned revision back, exactly as a validator will, and hash those files over
   the file set of the competition's protocol (`HashRules.file_set`: on mainnet the files the
   reference's download fetches): content hash, then the secure hash bound to our hotkey.
4. Commit the model id on chain with the hotkey, read it back and compare.
5. Only then make the repo public.

`describe_error` turns what can go wrong into one line that says what to do next.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import competitions
import constants
from finetune.chain import (
    ChainClient,
    ModelId,
    decode_commitment,
    hotkey_address,
    open_chain,
    validate_repo_id,
)
from finetune.competition import Competition
from finetune.errors import (
    ChainError,
    ConfigError,
    FinetuneError,
    InvalidCommitment,
    ModelRejected,
    NotRegistered,
    RateLimited,
    RepoNotFound,
    SpaceLimitExceeded,
    StorageError,
)
from finetune.mining.settings import UploadSettings
from finetune.protocol import NEXT
from finetune.storage import (
    ModelStore,
    RevisionInfo,
    check_model_dir,
    check_revision,
    content_hash,
    is_allowed_file,
    open_store,
    secure_hash,
)
from finetune.storage.files import MANIFEST_FILE, MAX_MANIFEST_BYTES, read_small_json
from finetune.submission import check_submission

logger = logging.getLogger(__name__)

SECONDS_PER_BLOCK = constants.BLOCK_TIME_S  # for "retry in about N minutes"


@dataclass(frozen=True)
class UploadReport:
    """What was published: the model id, its commitment text and block, and the hashes."""

    model_id: ModelId
    commitment: str
    block: int
    content_hash: str
    hotkey: str

    @property
    def repo_id(self) -> str:
        return self.model_id.repo_id

    @property
    def revision(self) -> str:
        return self.model_id.commit


def has_hf_token() -> bool:
    """True when a Hugging Face token is set (``HF_TOKEN``) or saved by ``hf auth login``."""
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return True
    from huggingface_hub import get_token

    return bool(get_token())


def require_hf_token() -> None:
    """Fail before any work when uploading to the Hub without a token.

    Raises:
        ConfigError: reason ``no_hf_token``.
    """
    if not has_hf_token():
        raise ConfigError(
            "no Hugging Face token: run `hf auth login` or set HF_TOKEN (a token with write access)",
            reason="no_hf_token",
        )


def check_local_model(
    model_dir: str | Path, competition: Competition, *, file_set: str = NEXT.hashing.file_set
) -> None:
    """Run the validator's checks on what an upload of `model_dir` would push.

    Only the uploaded files are checked (scratch files beside them are never pushed), through a
    folder of links to them; their content hash over `file_set` is taken too, so files a
    validator of that protocol could not hash (e.g. two with equal bytes under the reference
    file set) stop the upload before anything is pushed.

    Raises:
        ModelRejected: the first violation (`too_large`, `unsafe_files`, `bad_architecture`,
            `remote_code`, `bad_param_count`, `corrupt_safetensors`, `weight_norms`,
            `duplicate_files`, ...; for the seeds' competitions the manifest's codes,
            `missing_manifest`, `instruct_base`, `unlisted_expert`, ...).
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ModelRejected(f"model directory {folder} does not exist", reason="not_found")
    check_revision(RevisionInfo.of_folder(folder), None, competition.constraints)
    with tempfile.TemporaryDirectory(prefix="upload-check-") as staged:
        for path in folder.iterdir():
            if path.is_file() and is_allowed_file(path.name):
                os.symlink(path.resolve(), Path(staged) / path.name)
        check_model_dir(staged, competition.constraints)
        content_hash(staged, file_set=file_set)
    if competition.constraints.submission is not None:  # the seeds' competitions: its manifest too
        manifest = folder / MANIFEST_FILE
        raw = manifest.read_bytes()[: MAX_MANIFEST_BYTES + 1] if manifest.is_file() else None
        config = read_small_json(folder / "config.json")
        check_submission(raw, competition.constraints, config if isinstance(config, dict) else {})


def require_registered(chain: ChainClient, hotkey: str) -> None:
    """Check that `hotkey` is registered on the chain's subnet.

    Raises:
        NotRegistered: it is not in the subnet's metagraph.
    """
    if chain.metagraph().by_hotkey(hotkey) is None:
        raise NotRegistered(
            f"hotkey {hotkey} is not registered on subnet {chain.netuid}", hotkey=hotkey
        )


def _hash_as_validator(store: ModelStore, repo_id: str, revision: str, file_set: str) -> str:
    """Content hash of the revision as a validator downloads it (not of the local folder)."""
    with tempfile.TemporaryDirectory(prefix="upload-verify-") as tmp:
        snapshot = store.download(repo_id, revision, Path(tmp) / "snapshot")
        return content_hash(snapshot, file_set=file_set)


def _make_private_if_exists(store: ModelStore, repo_id: str) -> None:
    # An existing public repo would expose the new revision the moment it is pushed.
    try:
        store.set_private(repo_id, True)
    except RepoNotFound:
        pass


def upload_model(
    model_dir: str | Path,
    *,
    repo_id: str,
    competition: Competition,
    wallet: Any,
    chain: ChainClient,
    store: ModelStore,
    hotkey: str | None = None,
    file_set: str = NEXT.hashing.file_set,
) -> UploadReport:
    """Push a model privately, commit it on chain, verify, then make it public.

    Args:
        model_dir: the model folder (safetensors, config, tokenizer files).
        repo_id: ``namespace/name`` on the store (at most 38 characters).
        competition: the competition entered (its id goes into the commitment; its
            constraints are checked first).
        wallet: signs the commitment with its hotkey (devnet: anything with a hotkey address).
        chain: where the commitment is published.
        store: where the model is pushed.
        hotkey: the hotkey address (default: the wallet's).
        file_set: the file set validators hash, from the protocol in force
            (`schedule.protocol_at(block).hashing.file_set`): ``reference`` on mainnet.

    Returns:
        The published model id, its block and hashes.

    Raises:
        InvalidCommitment: the repo id cannot be committed.
        NotRegistered: the hotkey is not on the subnet (checked before pushing anything).
        ModelRejected: the model breaks the competition's constraints.
        RateLimited: the chain refuses another commitment yet (`SpaceLimitExceeded` for the
            commitment space); the repo stays private and can be committed later.
        StorageError: the push or the verification download failed.
        ChainError: the commitment read back differs from what was published.
    """
    hotkey = hotkey or hotkey_address(wallet)
    validate_repo_id(repo_id)
    require_registered(chain, hotkey)
    check_local_model(model_dir, competition, file_set=file_set)

    _make_private_if_exists(store, repo_id)
    revision = store.upload(model_dir, repo_id, private=True)
    logger.info("pushed %s@%s (private)", repo_id, revision)
    digest = _hash_as_validator(store, repo_id, revision, file_set)
    model_id = ModelId.for_repo(
        repo_id,
        commit=revision,
        secure_hash=secure_hash(digest, hotkey),
        competition_id=competition.id,
    )
    commitment = model_id.to_commitment()
    chain.publish_commitment(wallet, commitment)
    read_back = chain.read_commitment(hotkey)
    if read_back is None or decode_commitment(read_back[0]) != model_id:
        raise ChainError(
            f"commitment read back for {hotkey} is {read_back and read_back[0]!r}, not {commitment!r}",
            reason="commitment_mismatch",
        )
    store.set_private(repo_id, False)
    # The result itself is the caller's to show (the scripts print it once, from the report).
    logger.debug("committed %s at block %d; %s is now public", commitment, read_back[1], repo_id)
    return UploadReport(model_id, commitment, read_back[1], digest, hotkey)


def _retry_hint(error: RateLimited) -> str:
    blocks = error.retry_after_blocks
    if blocks is None:
        return "retry later"
    minutes = max(1, round(blocks * SECONDS_PER_BLOCK / 60))
    return f"retry in {blocks} blocks (about {minutes} min at {SECONDS_PER_BLOCK} s/block)"


def describe_error(error: BaseException) -> str:
    """One line for the CLI: what went wrong and what to do about it."""
    if isinstance(error, InvalidCommitment) or getattr(error, "reason", None) == "bad_repo_id":
        return f"invalid repo id: {error} (NAMESPACE/NAME, at most 38 characters, letters, digits, '-', '_', '.')"
    if isinstance(error, NotRegistered):
        return f"{error}: register it first (btcli subnets register) or pick another --wallet.hotkey"
    if isinstance(error, SpaceLimitExceeded):
        return f"commitment space limit reached: {_retry_hint(error)}; the repo stays private until then"
    if isinstance(error, RateLimited):
        return f"commitment rate limit: {_retry_hint(error)}; the repo stays private until then"
    if isinstance(error, ModelRejected):
        return f"model breaks the competition's constraints ({error.reason}): {error}"
    if isinstance(error, ConfigError):
        return str(error)
    if isinstance(error, StorageError):
        return f"model store failed ({error.reason}): {error}"
    if isinstance(error, ChainError):
        return f"chain failed ({error.reason}): {error}"
    if isinstance(error, FinetuneError):
        return f"{error.reason}: {error}"
    return f"{type(error).__name__}: {error}"


def run_upload(settings: UploadSettings) -> UploadReport:
    """Everything ``scripts/upload_model.py`` does: build the clients, then `upload_model`.

    The competition is the definition in force at the chain's current block, and the hash
    covers the file set of the protocol in force then.

    Raises:
        FinetuneError: any failure; `describe_error` words it for the user.
    """
    if settings.hub == "hf":
        require_hf_token()
    wallet = settings.wallet.load()
    chain = open_chain(settings.chain, netuid=settings.netuid, timeout_s=settings.chain_timeout_s)
    block = chain.current_block()
    schedule = competitions.get_schedule(settings.schedule)
    competition = competitions.get_competition(settings.competition, block=block, schedule=schedule)
    return upload_model(
        settings.model,
        repo_id=settings.repo,
        competition=competition,
        wallet=wallet,
        chain=chain,
        store=open_store(settings.hub),
        file_set=schedule.protocol_at(block).hashing.file_set,
    )


__all__ = [
    "SECONDS_PER_BLOCK",
    "UploadReport",
    "check_local_model",
    "describe_error",
    "has_hf_token",
    "require_hf_token",
    "require_registered",
    "run_upload",
    "upload_model",
]
