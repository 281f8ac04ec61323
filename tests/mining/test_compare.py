"""Upload-if-better: candidates from chain data, the epsilon rule, and the miner's whole run."""

from __future__ import annotations

import json
import math

import pytest

from competitions import LOCAL_INSTRUCT, tasks
from finetune.chain import DevnetChain, MetagraphSnapshot, ModelId, NeuronInfo, decode_commitment
from finetune.competition import EpsilonSpec
from finetune.datasets import DataConfig
from finetune.eval import evaluate_model, prepare_task_data
from finetune.mining.compare import (
    Candidate,
    IncumbentScore,
    chain_candidates,
    compare_with_chain,
    consensus_weights,
    decide,
    default_training_tasks,
    run_miner,
)
from finetune.mining.settings import MinerSettings
from finetune.mining.upload import upload_model
from finetune.storage import DirModelStore

SPEC = EpsilonSpec(start=0.05, end=0.01, decay_blocks=100)
WORD_SORTING = LOCAL_INSTRUCT.model_copy(update={"tasks": (tasks.word_sorting(1.0, samples=8),)})


def _model_id(name: str, competition_id: int = 101) -> ModelId:
    return ModelId("miner", name, "a" * 40, "A" * 43 + "=", competition_id)


def _incumbent(score: float, block: int, uid: int = 1) -> IncumbentScore:
    return IncumbentScore(Candidate(uid, f"hk{uid}", _model_id(f"m{uid}"), block, 0.0), score)


def test_consensus_weights_are_stake_weighted():
    graph = MetagraphSnapshot(
        block=10,
        netuid=1,
        neurons=(
            NeuronInfo(0, "v0", 300.0, True),
            NeuronInfo(1, "v1", 100.0, True),
            NeuronInfo(2, "m2", 0.0, False),
            NeuronInfo(3, "m3", 0.0, False),
        ),
    )
    rows = {0: {2: 1.0}, 1: {2: 0.5, 3: 0.5}, 2: {3: 1.0}}  # uid 2 has no stake: ignored
    assert consensus_weights(graph, rows) == {2: 350.0, 3: 50.0}


def test_candidates_are_valid_commitments_of_the_competition_most_weighted_first():
    neurons = (
        NeuronInfo(0, "a", 0.0, False, _model_id("early").to_commitment(), 5),
        NeuronInfo(1, "b", 0.0, False, _model_id("weighted").to_commitment(), 50),
        NeuronInfo(2, "c", 0.0, False, _model_id("other", 102).to_commitment(), 1),
        NeuronInfo(3, "d", 0.0, False, "garbage", 1),
        NeuronInfo(4, "e", 0.0, False, None, None),
        NeuronInfo(5, "f", 0.0, False, _model_id("late").to_commitment(), 90),
    )
    graph = MetagraphSnapshot(block=100, netuid=1, neurons=neurons)
    found = chain_candidates(graph, 101, {1: 0.9}, limit=2)
    assert [(c.uid, c.model_id.name, c.block, c.weight) for c in found] == [
        (1, "weighted", 50, 0.9),
        (0, "early", 5, 0.0),
    ]
    assert [c.uid for c in chain_candidates(graph, 101, {}, limit=5)] == [0, 1, 5]


def test_decide_applies_the_incumbents_epsilon_advantage():
    # Incumbent from block 0 seen at block 1: epsilon ~5 %, so ours must be below ~0.95 x theirs.
    assert not decide(0.96, [_incumbent(1.0, 0)], block_now=1, spec=SPEC).upload
    assert decide(0.94, [_incumbent(1.0, 0)], block_now=1, spec=SPEC).upload
    # After the decay, 1 % is enough.
    assert decide(0.985, [_incumbent(1.0, 0)], block_now=100, spec=SPEC).upload
    refused = decide(0.995, [_incumbent(1.0, 0, uid=7)], block_now=100, spec=SPEC)
    assert not refused.upload and "uid 7" in refused.reason and "1.0% epsilon" in refused.reason
    # Ours must beat every incumbent; a failed incumbent is beaten by any finite score.
    both = [_incumbent(math.inf, 0, uid=1), _incumbent(1.0, 0, uid=2)]
    assert not decide(0.99, both, block_now=1, spec=SPEC).upload
    assert decide(0.5, both, block_now=1, spec=SPEC).upload
    assert decide(3.0, [], block_now=0, spec=SPEC).upload
    assert not decide(math.inf, [], block_now=0, spec=SPEC).upload


def test_default_training_tasks_are_the_reference_loss_ones():
    assert default_training_tasks(LOCAL_INSTRUCT) == ["word_sorting"]


@pytest.fixture
def chain_with_incumbent(tmp_path, tiny_model_dir):
    chain = DevnetChain(tmp_path / "chain.db", netuid=1)
    chain.register("5Validator", stake=1000.0, validator_permit=True)
    chain.register("5Incumbent")
    store = DirModelStore(tmp_path / "hub")
    upload_model(
        tiny_model_dir, repo_id="someone/base", competition=WORD_SORTING, wallet="5Incumbent",
        chain=chain, store=store,
    )  # fmt: skip
    chain.advance(1)
    chain.set_weights("5Validator", {1: 1.0}, version_key=1)
    return chain, store


def test_compare_scores_ours_and_the_incumbent_on_the_same_data(chain_with_incumbent, tiny_model_dir, merge_dirs):
    chain, store = chain_with_incumbent
    data = prepare_task_data(WORD_SORTING, seed=0, config=DataConfig(offline=True))
    # The very same model, uploaded later: it ties on score and loses to epsilon.
    same = compare_with_chain(tiny_model_dir, WORD_SORTING, data, chain=chain, store=store)
    assert same.ours == same.incumbents[0].score
    assert same.incumbents[0].candidate.weight == pytest.approx(1000.0)
    assert not same.decision.upload and "epsilon" in same.decision.reason
    # Without epsilon, the lower score decides.
    flat = WORD_SORTING.model_copy(
        update={"constraints": WORD_SORTING.constraints.model_copy(
            update={"epsilon": EpsilonSpec(start=0.0, end=0.0, decay_blocks=1)})}
    )  # fmt: skip
    other = compare_with_chain(merge_dirs["m1"], flat, data, chain=chain, store=store)
    theirs = evaluate_model(tiny_model_dir, flat, data).total
    assert other.incumbents[0].score == theirs
    assert other.decision.upload == (other.ours < theirs)
    assert json.loads(json.dumps(other.to_json()))["incumbents"][0]["repo"] == "someone/base"


def test_run_miner_trains_and_uploads_when_no_one_competes(tmp_path, tiny_model_dir):
    import bittensor as bt

    wallet = bt.Wallet(name="miner", hotkey="default", path=str(tmp_path / "wallets"))
    wallet.create_new_coldkey(use_password=False, suppress=True, overwrite=True)
    wallet.create_new_hotkey(use_password=False, suppress=True, overwrite=True)
    chain = DevnetChain(tmp_path / "chain.db", netuid=1)
    chain.register(wallet.hotkey.ss58_address)
    settings = MinerSettings(
        model=tiny_model_dir, competition="LOCAL_INSTRUCT", out=tmp_path / "out", schedule="local",
        max_steps=3, lr=1e-3, batch_size=4, eval_every=0, eval_samples=2, task_samples=24,
        offline=True, device="cpu", upload_if_better=True, repo="miner/trained",
        wallet={"name": "miner", "hotkey": "default", "path": tmp_path / "wallets"},
        chain=f"devnet:{tmp_path / 'chain.db'}", netuid=1, hub=f"dir:{tmp_path / 'hub'}",
    )  # fmt: skip
    report = run_miner(settings)

    assert report.train.steps == 3 and (tmp_path / "out" / "best" / "model.safetensors").is_file()
    assert report.comparison is not None and report.comparison.decision.upload
    assert report.comparison.incumbents == ()
    assert json.loads((tmp_path / "out" / "comparison.json").read_text())["upload"] is True
    committed = decode_commitment(chain.read_commitment(wallet.hotkey.ss58_address)[0])
    assert committed == report.upload.model_id and committed.competition_id == LOCAL_INSTRUCT.id


class _CountingStore:
    def __init__(self, inner):
        self.inner, self.downloads = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def download(self, repo_id, revision, dest_dir):
        self.downloads += 1
        return self.inner.download(repo_id, revision, dest_dir)


def _stored_candidate(tmp_path, tiny_model_dir, hotkey="5Incumbent"):
    from finetune.storage import content_hash, secure_hash

    store = _CountingStore(DirModelStore(tmp_path / "hub"))
    revision = store.upload(tiny_model_dir, "someone/base", private=False)
    good = secure_hash(content_hash(tiny_model_dir), hotkey)
    model_id = ModelId("someone", "base", revision, good, WORD_SORTING.id)
    return store, Candidate(1, hotkey, model_id, 10, 1.0)


def test_incumbent_over_the_size_limit_is_never_downloaded(tmp_path, tiny_model_dir):
    from finetune.mining.compare import score_candidate

    store, candidate = _stored_candidate(tmp_path, tiny_model_dir)
    small = WORD_SORTING.model_copy(
        update={"constraints": WORD_SORTING.constraints.model_copy(update={"max_bytes": 1000})}
    )
    scored = score_candidate(candidate, small, None, store=store, device="cpu", batch_tokens=64)
    assert scored.score == math.inf and scored.detail.startswith("too_large")
    assert store.downloads == 0


def test_incumbent_whose_hash_is_not_bound_to_its_hotkey_does_not_count(tmp_path, tiny_model_dir):
    from finetune.mining.compare import score_candidate

    store, candidate = _stored_candidate(tmp_path, tiny_model_dir, hotkey="5Original")
    copied = Candidate(2, "5Copier", candidate.model_id, 20, 1.0)  # someone else's commitment
    scored = score_candidate(copied, WORD_SORTING, None, store=store, device="cpu", batch_tokens=64)
    assert scored.score == math.inf and scored.detail.startswith("hash_mismatch")


class _Stop(Exception):
    pass


def test_the_miner_scores_under_the_protocol_of_its_competitions_period(monkeypatch, tmp_path, tiny_model_dir):
    """Mainnet validators run reference-3.1: a miner's local draws and scores must too."""
    from finetune.eval import TaskData
    from finetune.mining import compare as compare_module
    from finetune.protocol import NEXT, REFERENCE_31

    seen = {}

    def prepare(competition, *, rules, **_):
        seen["data"] = rules
        return TaskData(seed=0, samples={})

    def train(*_, rules, **__):
        seen["eval"] = rules
        raise _Stop

    monkeypatch.setattr(compare_module, "prepare_task_data", prepare)
    monkeypatch.setattr(compare_module, "load_tokenizer", lambda *_: None)
    monkeypatch.setattr(compare_module, "task_pairs", lambda *_, **__: [("question", "answer")])
    monkeypatch.setattr(compare_module, "encode_pairs", lambda *_, **__: ["an example"])
    monkeypatch.setattr(compare_module, "train_model", train)
    for schedule, name, protocol in (("mainnet", "DISTILLED_REASONING_3B", REFERENCE_31),
                                     ("local", "LOCAL_REASONING", NEXT)):
        seen.clear()
        settings = MinerSettings(model=tiny_model_dir, competition=name, out=tmp_path / name,
                                 schedule=schedule, offline=True, device="cpu")
        with pytest.raises(_Stop):
            run_miner(settings)
        assert seen == {"data": protocol.data, "eval": protocol.eval}, name
