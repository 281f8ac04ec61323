"""The seeds demo (`make demo-seeds`): a round of each of the seeds' two competitions (SPEC §9).

Their tiny twins (`seeds-local` schedule, protocol `seeds-helm`) on a devnet chain and a
directory hub, offline on a CPU:

- LOCAL_EFFICIENT (1 GPU / 1 day): miners A and B train recipes from the published tiny base,
  briefly and longer, with `finetune.mining.recipe` (each upload carries its manifest); C
  submits A's weights declaring an instruct model as its base. The organisers then reproduce
  the winner's recipe (`scripts/reproduce.py check`) and compare the scores.
- LOCAL_MERGING: the organisers publish a base and two experts (trained on BoolQ and MAWPS
  rows) with pinned revisions; D merges them linearly, E with TIES and re-calibrates on the
  held-out pool's generators, F declares an expert that is not on the list.

The validator checks every manifest, scores the rest, ranks each round the HELM way and sets
weights; the round tables show each task's raw score and mean win rate, and each merge's time
and peak memory. `result.json` holds the rounds, winners, rejections and the reproduction.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from rich.console import Console

import competitions
from finetune.chain import create_dev_wallet
from finetune.competition import ExpertList
from finetune.datasets import DataConfig
from finetune.demo import Miner, _train, _upload, _winner_uid, local_subnet
from finetune.mining.merge_submission import build_merge_submission, fetch_listed
from finetune.mining.recipe import RecipeSettings, compare_models, rerun, run_recipe
from finetune.storage import ModelCache, content_hash, secure_hash
from finetune.storage.files import MANIFEST_FILE
from finetune.tiny_model import build_tiny_model
from finetune.validator.fetcher import StoreFetcher
from finetune.validator.loop import LoopConfig, Validator

EFFICIENT = competitions.LOCAL_EFFICIENT
MERGING = competitions.LOCAL_MERGING
BASE_REPO = "bases/tiny-llama-base"
HELD_OUT_GENERATORS = "dyck,word_sorting"  # the pool's rule-generated members


def _publish_raw(chain, store, miner: Miner, model_dir: Path, competition) -> int:
    """Upload and commit without the miner tool's checks (which refuse a bad manifest): what
    a miner who bypasses them sends. The validator must reject it on its own."""
    from finetune.chain import ModelId

    commit = store.upload(model_dir, miner.repo, private=False)
    digest = content_hash(model_dir)
    model_id = ModelId.for_repo(miner.repo, commit=commit, secure_hash=secure_hash(digest, miner.hotkey),
                                competition_id=competition.id)
    chain.publish_commitment(miner.wallet, model_id.to_commitment())
    return chain.metagraph().by_hotkey(miner.hotkey).uid


def _with_manifest(source: Path, dest: Path, edit) -> Path:
    """A copy of a model folder whose manifest `edit(dict)` changed."""
    shutil.copytree(source, dest)
    manifest = json.loads((dest / MANIFEST_FILE).read_text())
    edit(manifest)
    (dest / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return dest


def _recipes(console, chain, store, miners, work: Path, base: Path, base_rev: str, quick: bool) -> dict:
    console.rule("2. LOCAL_EFFICIENT: two recipes from the published base, and a false declaration")
    brief = RecipeSettings(tasks=("dyck", "word_sorting"), task_samples=64, max_steps=3, lr=2e-3, seed=1)
    longer = brief.model_copy(update={"max_steps": 12 if quick else 40, "task_samples": 160, "seed": 2})
    runs = {}
    for name, settings in (("A", brief), ("B", longer)):
        runs[name] = run_recipe(base, EFFICIENT, settings, work / f"recipe-{name}", base_repo=BASE_REPO,
                                base_revision=base_rev)
        console.log(f"miner {name}: recipe of {settings.max_steps} steps trained in {runs[name].seconds:.1f}s")
    uids = {name: _upload(console, chain, store, miners[name], runs[name].model_dir, EFFICIENT)[0] for name in "AB"}

    def instruct(manifest):
        manifest["base"]["repo"] = "bases/tiny-llama-instruct"
    lying = _with_manifest(runs["A"].model_dir, work / "recipe-C", instruct)
    uids["C"] = _publish_raw(chain, store, miners["C"], lying, EFFICIENT)
    console.log(f"miner C (uid {uids['C']}) committed A's weights declaring an instruct base")
    return {"uids": uids, "runs": runs}


def _experts(console, store, work: Path, base: Path, quick: bool) -> ExpertList:
    """The organisers' published list: the base and two experts, pinned at their revisions."""
    console.rule("3. LOCAL_MERGING: the organisers publish a base and two experts")
    steps = 10 if quick else 30
    boolq = _train(console, base, work / "expert-boolq", MERGING, ["boolq"], steps=steps, seed=4)
    mawps = _train(console, base, work / "expert-mawps", MERGING, ["mawps"], steps=steps, seed=5)
    listed = []
    published = MERGING.constraints.submission.experts.entries()  # the base, then the experts
    for entry, folder in zip(published, (base, boolq, mawps), strict=True):
        revision = store.upload(folder, entry.repo, private=False)
        listed.append(entry.model_copy(update={"revision": revision}))
    experts = ExpertList(competition=MERGING.name, base=listed[0], experts=tuple(listed[1:]))
    (work / "experts.json").write_text(experts.model_dump_json(indent=2))
    console.log(f"published {work / 'experts.json'}: " + ", ".join(f"{e.repo}@{e.revision[:8]}"
                                                                   for e in experts.entries()))
    return experts


def _merges(console, chain, store, miners, work: Path, experts: ExpertList, quick: bool) -> dict:
    console.rule("4. merges: linear, TIES + re-calibration, and one with an unlisted expert")
    base, listed = fetch_listed(experts, store, work / "fetched")
    uids, figures = {}, {}
    plans = (("D", "linear", None, None), ("E", "ties", base, HELD_OUT_GENERATORS))
    for name, method, merge_base, recal in plans:
        out = work / f"merge-{name}"
        manifest, _ = build_merge_submission(method=method, base=merge_base, experts=listed, out_dir=out,
                                             competition=MERGING, recalibrate=recal,
                                             recalibrate_steps=8 if quick else 20, density=0.5)
        figures[name] = {"method": method, "merge_seconds": manifest.merge_seconds,
                         "peak_memory_bytes": manifest.peak_memory_bytes,
                         "recalibration": manifest.recalibration.model_dump() if manifest.recalibration else None}
        uids[name] = _upload(console, chain, store, miners[name], out, MERGING)[0]

    def stranger(manifest):
        manifest["experts"][0]["repo"] = "someone/private-expert"
    bad = _with_manifest(work / "merge-D", work / "merge-F", stranger)
    uids["F"] = _publish_raw(chain, store, miners["F"], bad, MERGING)
    console.log(f"miner F (uid {uids['F']}) committed a merge declaring an unlisted expert")
    return {"uids": uids, "figures": figures}


def run_seeds_demo(out_dir: Path, *, console: Console | None = None, quick: bool = False) -> dict:
    """Run the seeds demo in `out_dir/work` (wiped first) and write `out_dir/result.json`.

    Args:
        quick: fewer training steps (the test's setting); the outcome is the same.

    Returns:
        The result record that was written.
    """
    started = time.monotonic()
    console = console or Console(width=None if Console().is_terminal else 180)
    console.rule("1. a devnet chain, a directory hub, wallets, the published tiny base")
    work, chain, store, wallets, validator_wallet = local_subnet(out_dir)
    kinds = {"A": "recipe", "B": "recipe", "C": "recipe", "D": "merge", "E": "merge", "F": "merge"}
    miners = {n: Miner(n, f"miner-{n.lower()}/tiny-{k}", (EFFICIENT if k == "recipe" else MERGING).id,
                       create_dev_wallet(f"miner{n}", "default", wallets)) for n, k in kinds.items()}
    for miner in miners.values():
        chain.register(miner.hotkey, stake=10.0)
    base = build_tiny_model(work / "models" / "base", seed=0)
    base_rev = store.upload(base, BASE_REPO, private=False)

    recipes = _recipes(console, chain, store, miners, work / "models", base, base_rev, quick)
    experts = _experts(console, store, work / "models", base, quick)
    merges = _merges(console, chain, store, miners, work / "models", experts, quick)
    chain.advance(max(EFFICIENT.constraints.eval_block_delay, MERGING.constraints.eval_block_delay) + 3)

    console.rule("5. the validator: one round of each, ranked the HELM way")
    cache = ModelCache(work / "validator" / "models", min_free_bytes=0, grace_period_s=3600)
    validator = Validator(
        config=LoopConfig(state_path=work / "validator" / "state.json", device="cpu", batch_tokens=8192,
                          model_deadline_s=300, data=DataConfig(offline=True), genesis_block=0),
        chain=chain, schedule=competitions.SEEDS_LOCAL_SCHEDULE, fetcher=StoreFetcher(store, cache),
        wallet=validator_wallet, console=console,
    )
    rounds = validator.run_once()
    weights = {int(uid): w for uid, w in chain.validator_weights().get(0, {}).items()}
    reproduction = _reproduce_winner(console, rounds, recipes, base, work)
    uids = {**recipes["uids"], **merges["uids"]}
    return _report(out_dir, console, rounds, weights, uids, validator, merges["figures"], reproduction,
                   time.monotonic() - started)


def _reproduce_winner(console, rounds, recipes, base: Path, work: Path) -> dict:
    """The organisers re-run the LOCAL_EFFICIENT winner's recipe and compare the scores."""
    console.rule("6. the organisers reproduce the LOCAL_EFFICIENT winner")
    round_ = next(r for r in rounds if r.competition_name == EFFICIENT.name)
    winner = _winner_uid(round_)
    name = next((n for n, uid in recipes["uids"].items() if uid == winner), None)
    if name is None:
        return {"winner": None, "reproduced": False}
    submitted = recipes["runs"][name].model_dir
    run = rerun(submitted, base, EFFICIENT, work / "reproduction")
    verdict = compare_models(submitted, run, EFFICIENT)
    for task, t in verdict.tasks.items():
        console.print(f"{task}: submitted {t['submitted']:.4f} reproduced {t['reproduced']:.4f} "
                      f"difference {t['difference']:.4f}")
    console.print(f"miner {name}: {'REPRODUCED' if verdict.reproduced else 'NOT REPRODUCED'} "
                  f"(re-run {verdict.seconds:.1f}s)")
    return {"winner": name, **verdict.to_json()}


def _report(out_dir, console, rounds, weights, uids, validator, figures, reproduction, seconds) -> dict:
    rejected = {m.uid: m.reason for m in validator.state.models.values() if m.status == "rejected"}
    winners = {r.competition_name: _winner_uid(r) for r in rounds}
    result = {
        "rounds": [{
            "competition": r.competition_name, "ranking": r.ranking, "winner_uid": winners[r.competition_name],
            "helm": {str(m.uid): m.win_rate for m in r.models},
            "task_win_rates": {str(m.uid): m.task_win_rates for m in r.models},
            "raw": {str(m.uid): {n: raw for n, (raw, _) in m.tasks.items()} for m in r.models},
            "submissions": {str(m.uid): m.submission for m in r.models},
        } for r in rounds],
        "weights": {str(uid): w for uid, w in sorted(weights.items())},
        "winners": winners, "uids": uids, "rejected": {str(k): v for k, v in rejected.items()},
        "merges": figures, "reproduction": reproduction, "seconds": round(seconds, 1),
    }
    result["checks"] = {
        "B (the longer recipe) wins LOCAL_EFFICIENT": winners.get(EFFICIENT.name) == uids["B"],
        "a merge wins LOCAL_MERGING": winners.get(MERGING.name) in (uids["D"], uids["E"]),
        "C rejected: instruct_base": rejected.get(uids["C"]) == "instruct_base",
        "F rejected: unlisted_expert": rejected.get(uids["F"]) == "unlisted_expert",
        "the winner's recipe reproduces": bool(reproduction.get("reproduced")),
        "weights sum to 1": abs(sum(weights.values()) - 1.0) < 1e-6,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    console.rule("7. result")
    for name, ok in result["checks"].items():
        console.print(f"{'[green]PASS' if ok else '[red]FAIL'}[/] {name}")
    for r in rounds:
        best = r.by_hotkey().get(r.winner)
        why = ", ".join(f"{task} win rate {rate:.2f}" for task, rate in sorted(best.task_win_rates.items())) \
            if best else ""
        console.print(f"{r.competition_name}: winner uid {winners[r.competition_name]}"
                      + (f" (HELM {best.win_rate:.3f}: {why})" if best else ""), markup=False)
    console.print(f"weights: {result['weights']}; {seconds:.0f}s in all", markup=False)
    return result


__all__ = ["run_seeds_demo"]
