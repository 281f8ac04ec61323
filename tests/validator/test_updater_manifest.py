"""The updater checks a seeds competition's submission.json after the model checks, and records
the declared figures (or the reason) with the model; other competitions never read one."""

from __future__ import annotations

import json
from contextlib import nullcontext

import competitions as comps
from finetune.chain import ModelId, NeuronInfo
from finetune.validator.updater import check_neuron

REV = "d" * 40
HASH = "A" * 43 + "="


class _Fetcher:
    def __init__(self, model_dir, manifest):
        self.model_dir, self.manifest, self.manifest_reads = str(model_dir), manifest, 0

    def inspect(self, model_id, constraints, protocol):
        pass

    def fetch(self, hotkey, model_id):
        return self.model_dir

    def verify(self, model_dir, hotkey, model_id, constraints, protocol, should_abort=None):
        return "content-hash"

    def read_manifest(self, model_id):
        self.manifest_reads += 1
        return self.manifest

    def mark_used(self, hotkey, revision):
        pass

    def using(self, hotkey, revision):
        return nullcontext()


def _check(competition, schedule, fetcher):
    commitment = ModelId.for_repo("miner/tiny", commit=REV, secure_hash=HASH,
                                  competition_id=competition.id).to_commitment()
    neuron = NeuronInfo(uid=3, hotkey="5Miner", stake=1.0, validator_permit=False, commitment=commitment,
                        commitment_block=1)
    return check_neuron(neuron, schedule=schedule, block_now=1000, fetcher=fetcher)


def _merge_manifest(**changes) -> bytes:
    manifest = {"kind": "merge", "method": "linear",
                "experts": [{"repo": "experts/tiny-boolq", "revision": REV, "license": "apache-2.0"}],
                "merge_seconds": 2.5, "peak_memory_bytes": 1000}
    manifest.update(changes)
    return json.dumps(manifest).encode()


def test_a_good_merge_is_ready_with_its_figures(tiny_model_dir):
    model = _check(comps.LOCAL_MERGING, comps.SEEDS_LOCAL_SCHEDULE, _Fetcher(tiny_model_dir, _merge_manifest()))
    assert model.status == "ready", model.detail
    assert model.submission["merge_seconds"] == 2.5 and model.submission["peak_memory_bytes"] == 1000.0


def test_a_missing_or_rule_breaking_manifest_rejects_the_model_with_its_code(tiny_model_dir):
    for manifest, code in ((None, "missing_manifest"), (b"{", "bad_manifest"),
                           (_merge_manifest(merge_seconds=10**6), "over_budget")):
        model = _check(comps.LOCAL_MERGING, comps.SEEDS_LOCAL_SCHEDULE, _Fetcher(tiny_model_dir, manifest))
        assert (model.status, model.reason) == ("rejected", code)
        assert model.submission == {}


def test_competitions_without_submission_rules_never_read_a_manifest(tiny_model_dir):
    fetcher = _Fetcher(tiny_model_dir, b"not even json")
    model = _check(comps.LOCAL_INSTRUCT, comps.LOCAL_SCHEDULE, fetcher)
    assert model.status == "ready" and fetcher.manifest_reads == 0 and model.submission == {}
