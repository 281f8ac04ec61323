"""The local-subnet demo: a devnet chain, a directory hub, six miners and a validator.

Everything runs offline on a laptop CPU in a few minutes. What it shows:
- miner A uploads the base model unchanged, miner B a copy fine-tuned briefly on the task
  data, miner C one trained longer, and a fourth hotkey D re-uploads C's files later (a copy);
- two more miners (E: base, F: fine-tuned) enter the other local competition, so every
  active competition has a round;
- the validator discovers, downloads, verifies and scores them all in isolated worker
  processes, computes wins, smoothed weights, and sets weights on the devnet.
C must win LOCAL_REASONING, the copy must gain nothing, and the weights must sum to 1.
`result.json` names each competition's winner.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

import competitions
from finetune.chain import DevnetChain, create_dev_wallet, hotkey_address
from finetune.datasets import DataConfig
from finetune.eval import prepare_task_data
from finetune.mining.sft_data import encode_pairs, task_pairs
from finetune.mining.train import TrainOptions, train_model
from finetune.mining.upload import upload_model
from finetune.storage import DirModelStore, ModelCache
from finetune.tiny_model import build_tiny_model
from finetune.validator.fetcher import StoreFetcher
from finetune.validator.loop import LoopConfig, Validator

logger = logging.getLogger(__name__)

REASONING = competitions.LOCAL_REASONING
INSTRUCT = competitions.LOCAL_INSTRUCT


@dataclass(frozen=True)
class Miner:
    name: str
    repo: str
    competition_id: int
    wallet: object

    @property
    def hotkey(self) -> str:
        return hotkey_address(self.wallet)


def _train(console: Console, base: Path, out: Path, competition, datasets: list[str], steps: int,
           seed: int) -> Path:
    """Fine-tune with the miner's own code path (transformers Trainer, validator scoring)."""
    from transformers import AutoTokenizer

    started = time.monotonic()
    data = DataConfig(offline=True)
    tokenizer = AutoTokenizer.from_pretrained(base)
    pairs = task_pairs(datasets, seed=seed, count=200, config=data)
    examples = encode_pairs(tokenizer, pairs, max_length=competition.constraints.sequence_length)
    task_data = prepare_task_data(competition, seed=seed, config=data)
    options = TrainOptions(out_dir=out, max_steps=steps, learning_rate=2e-3, batch_size=8, warmup=0.0,
                           eval_every=max(steps // 2, 1), save_every=10**6, logging_steps=10**6,
                           device="cpu", seed=seed)
    report = train_model(base, competition, examples, task_data, options, tokenizer=tokenizer)
    console.log(f"trained {out.name}: {steps} steps on {len(examples)} examples in "
                f"{time.monotonic() - started:.0f}s; local score {report.best_score:.4f} (best at step "
                f"{report.best_step})")
    return report.best_dir


def _upload(console: Console, chain, store, miner: Miner, model_dir: Path, competition) -> tuple[int, str]:
    report = upload_model(model_dir, repo_id=miner.repo, competition=competition, wallet=miner.wallet,
                          chain=chain, store=store)
    uid = chain.metagraph().by_hotkey(miner.hotkey).uid
    console.log(f"miner {miner.name} (uid {uid}) committed {miner.repo}@{report.model_id.commit[:8]} "
                f"to {competition.name} at block {report.block}")
    return uid, report.model_id.commit


def local_subnet(out_dir: Path):
    """A fresh `out_dir/work` with a devnet chain (no rate limits), a directory hub, a wallet
    folder and a registered, staked validator: ``(work, chain, store, wallets, validator_wallet)``."""
    work = out_dir / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    chain = DevnetChain(work / "devnet.sqlite", netuid=1, block_time_s=12.0, commit_rate_limit=0,
                        weights_rate_limit=0)
    store = DirModelStore(work / "hub")
    wallets = work / "wallets"
    validator_wallet = create_dev_wallet("validator", "default", wallets)
    chain.register(hotkey_address(validator_wallet), stake=10_000.0, validator_permit=True)
    return work, chain, store, wallets, validator_wallet


def run_demo(out_dir: Path, *, console: Console | None = None) -> dict:
    """Run the whole demo in `out_dir/work` (wiped first) and write `out_dir/result.json`.

    Returns:
        The result record that was written.
    """
    console = console or Console(width=None if Console().is_terminal else 160)
    console.rule("1. a devnet chain, a directory hub, wallets")
    work, chain, store, wallets, validator_wallet = local_subnet(out_dir)
    miners = {
        name: Miner(name, f"miner-{name.lower()}/tiny-{comp.name.split('_')[1].lower()}", comp.id,
                    create_dev_wallet(f"miner{name}", "default", wallets))
        for name, comp in (("A", REASONING), ("B", REASONING), ("C", REASONING), ("D", REASONING),
                           ("E", INSTRUCT), ("F", INSTRUCT))
    }
    for miner in miners.values():
        chain.register(miner.hotkey, stake=10.0)

    console.rule("2. models: base, briefly trained, trained longer")
    base = build_tiny_model(work / "models" / "base", seed=0)
    reasoning_data = ["synthetic_1_sft", "codeforces_cots"]
    brief = _train(console, base, work / "models" / "brief", REASONING, reasoning_data, steps=6, seed=1)
    longer = _train(console, base, work / "models" / "longer", REASONING, reasoning_data, steps=60, seed=2)
    instruct = _train(console, base, work / "models" / "instruct", INSTRUCT,
                      ["synthetic_mmlu", "word_sorting"], steps=100, seed=3)

    console.rule("3. uploads and commitments")
    uids, revisions = {}, {}
    for name, model, comp in (("A", base, REASONING), ("B", brief, REASONING), ("C", longer, REASONING),
                              ("E", base, INSTRUCT), ("F", instruct, INSTRUCT)):
        uids[name], revisions[name] = _upload(console, chain, store, miners[name], model, comp)
    chain.advance(3)
    # D copies C's files later, under its own hotkey and repo.
    copied = store.download(miners["C"].repo, revisions["C"], work / "models" / "copied")
    uids["D"], _ = _upload(console, chain, store, miners["D"], copied, REASONING)
    chain.advance(REASONING.constraints.eval_block_delay + 3)

    console.rule("4. the validator: one round of every active competition")
    cache = ModelCache(work / "validator" / "models", min_free_bytes=0, grace_period_s=3600)
    validator = Validator(
        config=LoopConfig(state_path=work / "validator" / "state.json", device="cpu", batch_tokens=8192,
                          model_deadline_s=300, data=DataConfig(offline=True), genesis_block=0),
        chain=chain, schedule=competitions.LOCAL_SCHEDULE, fetcher=StoreFetcher(store, cache),
        wallet=validator_wallet, console=console,
    )
    rounds = validator.run_once()
    weights = {int(uid): w for uid, w in chain.validator_weights().get(0, {}).items()}
    return _report(out_dir, console, rounds, weights, uids, validator)


def _winner_uid(round_result) -> int | None:
    """The uid of a round's winner (the first at the best win rate), None if nobody won."""
    model = round_result.by_hotkey().get(round_result.winner)
    return model.uid if model else None


def _report(out_dir: Path, console: Console, rounds, weights: dict[int, float], uids: dict[str, int],
            validator: Validator) -> dict:
    winners = {r.competition_name: _winner_uid(r) for r in rounds}
    # Only the reasoning round has a winner known in advance: C, trained the longest. The
    # instruct round is shown as it comes out.
    expected = {REASONING.name: uids["C"]}
    result = {
        "rounds": [
            {"competition": r.competition_name,
             "winner_uid": winners[r.competition_name],
             "scores": {str(m.uid): m.score for m in r.models},
             "win_rates": {str(m.uid): m.win_rate for m in r.models},
             "task_failures": {str(m.uid): dict(m.task_failures) for m in r.models if m.task_failures}}
            for r in rounds
        ],
        "weights": {str(uid): w for uid, w in sorted(weights.items())},
        "winners": winners,
        "expected_winners": expected,
        "uids": uids,
        "rejected": {m.uid: m.reason for m in validator.state.models.values() if m.status == "rejected"},
    }
    checks = {
        f"C wins {REASONING.name}": winners.get(REASONING.name) == uids["C"],
        "the copy gains nothing": weights.get(uids["D"], 0.0) == 0.0,
        "weights sum to 1": abs(sum(weights.values()) - 1.0) < 1e-6,
    }
    result["checks"] = checks
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    console.rule("5. result")
    for name, ok in checks.items():
        console.print(f"{'[green]PASS' if ok else '[red]FAIL'}[/] {name}")
    console.print(f"weights: {result['weights']}")
    for name, uid in winners.items():
        console.print(f"{name}: winner uid {uid}" + (f" (expected {expected[name]})" if name in expected else ""))
    return result
