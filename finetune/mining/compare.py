"""Upload only if better, and `run_miner`: train, compare with the chain, upload if ours wins.

Upload only if better: score the chain's leading models locally and apply the validator's rule.

The incumbents are the models committed to the competition that validators weight most
(stake-weighted consensus of their weight rows); with no weights yet, the earliest commitments.
Each is downloaded at its pinned revision and scored with the validator's own code on the same
task data as ours. Ours would be committed at the current block, so an incumbent keeps its
epsilon advantage: we upload only if `scoring.is_win` says ours beats every incumbent.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import competitions
from finetune.chain import (
    ChainClient,
    MetagraphSnapshot,
    ModelId,
    decode_commitment,
    hotkey_address,
    open_chain,
    validate_repo_id,
)
from finetune.competition import Competition, EpsilonSpec, Method
from finetune.datasets import DataConfig
from finetune.errors import ConfigError, FinetuneError
from finetune.eval import TaskData, evaluate_model, prepare_task_data
from finetune.eval.loading import load_tokenizer
from finetune.mining.settings import MinerSettings
from finetune.mining.sft_data import encode_pairs, load_pairs, task_pairs
from finetune.mining.train import TrainOptions, TrainReport, train_model
from finetune.mining.upload import (
    UploadReport,
    require_hf_token,
    require_registered,
    upload_model,
)
from finetune.protocol import NEXT, ScoringProtocol
from finetune.scoring import epsilon, is_win
from finetune.storage import ModelStore, check_model_dir, check_revision, open_store, verify_hashes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A model committed on chain to the competition."""

    uid: int
    hotkey: str
    model_id: ModelId
    block: int
    weight: float  # stake-weighted consensus weight of the uid (0 when unweighted)


@dataclass(frozen=True)
class IncumbentScore:
    candidate: Candidate
    score: float  # inf when it cannot be downloaded, fails the checks, or fails to score
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    upload: bool
    reason: str


@dataclass(frozen=True)
class Comparison:
    """Our local score against the incumbents', and whether to upload."""

    ours: float
    incumbents: tuple[IncumbentScore, ...]
    block_now: int
    decision: Decision

    def to_json(self) -> dict:
        return {
            "ours": self.ours,
            "block_now": self.block_now,
            "upload": self.decision.upload,
            "reason": self.decision.reason,
            "incumbents": [
                {
                    "uid": i.candidate.uid,
                    "repo": i.candidate.model_id.repo_id,
                    "revision": i.candidate.model_id.commit,
                    "block": i.candidate.block,
                    "weight": i.candidate.weight,
                    "score": i.score,
                    "detail": i.detail,
                }
                for i in self.incumbents
            ],
        }


def consensus_weights(
    metagraph: MetagraphSnapshot, validator_weights: Mapping[int, Mapping[int, float]]
) -> dict[int, float]:
    """Per uid, the stake-weighted sum of the validators' (normalised) weight rows."""
    total: dict[int, float] = {}
    for validator_uid, row in validator_weights.items():
        neuron = metagraph.by_uid(validator_uid)
        stake = neuron.stake if neuron is not None else 0.0
        row_sum = sum(row.values())
        if stake <= 0 or row_sum <= 0:
            continue
        for uid, weight in row.items():
            total[uid] = total.get(uid, 0.0) + stake * weight / row_sum
    return total


def chain_candidates(
    metagraph: MetagraphSnapshot,
    competition_id: int,
    weights: Mapping[int, float],
    *,
    limit: int,
) -> list[Candidate]:
    """The valid commitments to `competition_id`, most weighted first, then earliest first.

    Args:
        metagraph: neurons with their commitments.
        competition_id: the competition.
        weights: consensus weight per uid (`consensus_weights`).
        limit: how many to return.
    """
    found = []
    for neuron in metagraph.neurons:
        decoded = decode_commitment(neuron.commitment) if neuron.commitment else None
        if isinstance(decoded, ModelId) and decoded.competition_id == competition_id:
            block = neuron.commitment_block if neuron.commitment_block is not None else 0
            found.append(
                Candidate(neuron.uid, neuron.hotkey, decoded, block, weights.get(neuron.uid, 0.0))
            )
    found.sort(key=lambda c: (-c.weight, c.block, c.uid))
    return found[:limit]


def decide(
    ours: float, incumbents: Sequence[IncumbentScore], *, block_now: int, spec: EpsilonSpec
) -> Decision:
    """Upload iff ours, committed at `block_now`, beats every incumbent under the epsilon rule."""
    if not math.isfinite(ours):
        return Decision(False, "our model failed to score")
    for incumbent in incumbents:
        theirs, block = incumbent.score, incumbent.candidate.block
        if not is_win(ours, theirs, block_now, block, block_now, spec):
            advantage = epsilon(spec, block_now, block) if block < block_now else 0.0
            return Decision(
                False,
                f"uid {incumbent.candidate.uid} ({incumbent.candidate.model_id.repo_id}) scores "
                f"{theirs:.6g} with a {advantage:.1%} epsilon advantage; ours {ours:.6g}",
            )
    if not incumbents:
        return Decision(True, "no model committed to this competition yet")
    return Decision(True, f"ours {ours:.6g} beats all {len(incumbents)} incumbents")


def score_candidate(
    candidate: Candidate,
    competition: Competition,
    task_data: TaskData,
    *,
    store: ModelStore,
    device: str,
    batch_tokens: int,
    protocol: ScoringProtocol = NEXT,
) -> IncumbentScore:
    """Check one candidate as a validator of `protocol` would (size before download, hashes,
    files) and score it; a candidate a validator would reject scores inf."""
    model_id = candidate.model_id
    constraints = competition.constraints
    with tempfile.TemporaryDirectory(prefix="incumbent-") as tmp:
        try:
            info = store.revision_info(model_id.repo_id, model_id.commit)
            check_revision(info, None, constraints)  # never download what is over the limit
            folder = store.download(model_id.repo_id, model_id.commit, Path(tmp) / "model")
            verify_hashes(folder, candidate.hotkey, model_id.secure_hash)
            check_model_dir(folder, constraints, checks=protocol.checks)
            result = evaluate_model(
                folder, competition, task_data, device=device, batch_tokens=batch_tokens,
                rules=protocol.eval,
            )
        except (FinetuneError, OSError) as error:
            logger.warning("incumbent uid %d unusable: %s", candidate.uid, error)
            return IncumbentScore(candidate, math.inf, f"{getattr(error, 'reason', 'error')}: {error}")
    logger.info("incumbent uid %d (%s): %.6g", candidate.uid, model_id.repo_id, result.total)
    return IncumbentScore(candidate, result.total)


def compare_with_chain(
    model_dir: str | Path,
    competition: Competition,
    task_data: TaskData,
    *,
    chain: ChainClient,
    store: ModelStore,
    device: str = "cpu",
    batch_tokens: int = 8192,
    max_candidates: int = 3,
    protocol: ScoringProtocol = NEXT,
) -> Comparison:
    """Score our saved model and the chain's leading ones on the same data; decide.

    Args:
        model_dir: our model, as it would be uploaded (scored from disk, in the competition's
            dtype, exactly as a validator loads it).
        competition: the competition entered.
        task_data: the local eval data (the same for every model scored).
        chain: read for the metagraph, validator weights and the current block.
        store: where incumbents are downloaded from.
        device: where models are scored.
        batch_tokens: eval batch budget.
        max_candidates: how many incumbents to score.
        protocol: the protocol validators score the competition under (its checks and eval
            rules; `task_data` must be drawn under its data rules).

    Returns:
        The scores and the decision.
    """
    ours = evaluate_model(
        model_dir, competition, task_data, device=device, batch_tokens=batch_tokens,
        rules=protocol.eval,
    ).total
    metagraph = chain.metagraph()
    weights = consensus_weights(metagraph, chain.validator_weights())
    candidates = chain_candidates(metagraph, competition.id, weights, limit=max_candidates)
    incumbents = tuple(
        score_candidate(
            c, competition, task_data, store=store, device=device, batch_tokens=batch_tokens,
            protocol=protocol,
        )
        for c in candidates
    )
    block_now = chain.current_block()
    decision = decide(ours, incumbents, block_now=block_now, spec=competition.constraints.epsilon)
    logger.info("upload decision: %s (%s)", decision.upload, decision.reason)
    return Comparison(ours, incumbents, block_now, decision)


# --- the miner's run ---------------------------------------------------------------------


@dataclass(frozen=True)
class MineReport:
    train: TrainReport
    comparison: Comparison | None = None
    upload: UploadReport | None = None


def default_training_tasks(competition: Competition) -> list[str]:
    """The loaders of the competition's reference-loss tasks (they carry their answers)."""
    found = [t.dataset for t in competition.tasks if t.method is Method.REFERENCE_LOSS]
    return list(dict.fromkeys(found))


def train_options(settings: MinerSettings, device: str) -> TrainOptions:
    """The training part of the miner's settings."""
    return TrainOptions(
        out_dir=settings.out,
        max_hours=settings.max_hours,
        max_steps=settings.max_steps,
        epochs=settings.epochs,
        learning_rate=settings.lr,
        warmup=settings.warmup,
        batch_size=settings.batch_size,
        grad_accum=settings.grad_accum,
        gradient_checkpointing=settings.gradient_checkpointing,
        lora=settings.lora,
        lora_r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        eval_every=settings.eval_every,
        save_every=settings.save_every,
        resume=settings.resume,
        device=device,
        batch_tokens=settings.batch_tokens,
        seed=settings.seed,
        progress=settings.progress,
    )


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _upload_clients(settings: MinerSettings) -> tuple[object, ChainClient, ModelStore]:
    """Wallet, chain and store for --upload-if-better, checked before hours of training."""
    if not settings.repo:
        raise ConfigError("--upload-if-better needs --repo NAMESPACE/NAME")
    validate_repo_id(settings.repo)
    if settings.hub == "hf":
        require_hf_token()
    wallet = settings.wallet.load()
    chain = open_chain(settings.chain, netuid=settings.netuid, timeout_s=settings.chain_timeout_s)
    require_registered(chain, hotkey_address(wallet))
    return wallet, chain, open_store(settings.hub)


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def run_miner(settings: MinerSettings) -> MineReport:
    """Train for a competition, then (with ``--upload-if-better``) compare and upload.

    Training pairs: every ``--data`` source, plus pairs drawn from the ``--tasks`` loaders
    (default: the competition's reference-loss tasks) with a seed other than the eval seed.

    Raises:
        FinetuneError: bad settings, unreadable data or model, chain or store failures.
        ValueError: no training examples.
    """
    schedule = competitions.get_schedule(settings.schedule)
    competition = competitions.get_competition(settings.competition, schedule=schedule)
    # Score locally as the validators of this competition's period do: their draws, prompts
    # and checks (reference-3.1 on mainnet), not this project's defaults.
    protocol = competitions.protocol_for(competition)
    clients = _upload_clients(settings) if settings.upload_if_better else None
    device = _resolve_device(settings.device)
    config = DataConfig(offline=settings.offline, data_dir=settings.data_dir)
    counts = {t.name: settings.eval_samples for t in competition.tasks} if settings.eval_samples else None
    task_data = prepare_task_data(
        competition, seed=settings.eval_seed, config=config, sample_counts=counts, rules=protocol.data
    )
    tokenizer = load_tokenizer(competition.constraints.tokenizer or settings.model)
    pairs = [p for source in settings.data for p in load_pairs(source, max_rows=settings.data_rows)]
    loaders = settings.tasks if settings.tasks is not None else default_training_tasks(competition)
    train_seed = settings.seed if settings.seed != settings.eval_seed else settings.seed + 1
    pairs += task_pairs(loaders, seed=train_seed, count=settings.task_samples, config=config)
    examples = encode_pairs(tokenizer, pairs, max_length=competition.constraints.sequence_length)
    if not examples:
        raise ConfigError("no training examples: pass --data FILE|DATASET or --tasks LOADER")
    logger.info("%d training examples from %d pairs", len(examples), len(pairs))
    report = train_model(
        settings.model, competition, examples, task_data,
        train_options(settings, device), tokenizer=tokenizer, rules=protocol.eval,
    )  # fmt: skip
    if clients is None or not _is_main_process():
        return MineReport(report)  # under torchrun only rank 0 compares and uploads
    wallet, chain, store = clients
    comparison = compare_with_chain(
        report.best_dir, competition, task_data, chain=chain, store=store, device=device,
        batch_tokens=settings.batch_tokens, max_candidates=settings.max_candidates,
        protocol=protocol,
    )  # fmt: skip
    (settings.out / "comparison.json").write_text(json.dumps(comparison.to_json(), indent=1) + "\n")
    if not comparison.decision.upload:
        return MineReport(report, comparison)
    upload = upload_model(
        report.best_dir, repo_id=settings.repo, competition=competition,
        wallet=wallet, chain=chain, store=store,
        file_set=schedule.protocol_at(chain.current_block()).hashing.file_set,
    )  # fmt: skip
    return MineReport(report, comparison, upload)


__all__ = [
    "Candidate",
    "Comparison",
    "Decision",
    "IncumbentScore",
    "MineReport",
    "chain_candidates",
    "compare_with_chain",
    "consensus_weights",
    "decide",
    "default_training_tasks",
    "run_miner",
    "score_candidate",
    "train_options",
]
