"""The seeds' submission manifest: parsing hostile bytes, and every rule's reason code."""

from __future__ import annotations

import json

import pytest

import competitions as comps
from finetune.errors import ModelRejected
from finetune.submission import (
    MAX_SUBMISSION_BYTES,
    check_submission,
    judge_base,
    settings_sha256,
)

REV = "a" * 40
FAMILIES = comps.EFFICIENT_1GPU_1DAY.constraints.approved_families
LLAMA = {"model_type": "llama"}


def recipe(**changes) -> dict:
    settings = {"lr": 0.002, "max_steps": 40, "tasks": ["dyck", "word_sorting"]}
    manifest = {"kind": "recipe", "base": {"repo": "bases/tiny-llama-base", "revision": REV},
                "recipe": {"settings": settings, "settings_sha256": settings_sha256(settings),
                           "data": ["dyck", "word_sorting"], "train_seconds": 12.0, "device": "cpu"}}
    manifest.update(changes)
    return manifest


def merge(**changes) -> dict:
    manifest = {"kind": "merge", "method": "ties",
                "base": {"repo": "experts/tiny-base", "revision": REV, "license": "apache-2.0"},
                "experts": [{"repo": "experts/tiny-boolq", "revision": REV, "license": "apache-2.0"},
                            {"repo": "experts/tiny-mawps", "revision": REV, "license": "apache-2.0"}],
                "merge_seconds": 0.5, "peak_memory_bytes": 300 * 2**20}
    manifest.update(changes)
    return manifest


def with_data(manifest: dict, data: list) -> dict:
    """The recipe trained on `data` (its settings say so too, and their hash follows)."""
    settings = {**manifest["recipe"]["settings"], "tasks": [], "data": data}
    manifest["recipe"].update(settings=settings, settings_sha256=settings_sha256(settings), data=data)
    return manifest


def _code(raw, competition=comps.LOCAL_EFFICIENT, config=LLAMA) -> str:
    with pytest.raises(ModelRejected) as err:
        check_submission(raw, competition.constraints, config)
    return err.value.reason


def _bytes(manifest: dict) -> bytes:
    return json.dumps(manifest).encode()


def test_a_good_recipe_and_a_good_merge_pass_with_their_figures():
    summary = check_submission(_bytes(recipe()), comps.LOCAL_EFFICIENT.constraints, LLAMA)
    assert summary["kind"] == "recipe" and summary["judged"] == "llama base"
    assert summary["base"] == "bases/tiny-llama-base@aaaaaaaa" and summary["train_seconds"] == 12.0
    summary = check_submission(_bytes(merge()), comps.LOCAL_MERGING.constraints, LLAMA)
    assert summary == {"kind": "merge", "method": "ties", "merge_seconds": 0.5,
                       "peak_memory_bytes": float(300 * 2**20), "recalibration": "", "total_seconds": 0.5}


@pytest.mark.parametrize(("raw", "code"), [
    (None, "missing_manifest"),
    (b"\xff\xfe not json", "bad_manifest"),
    (b"[]", "bad_manifest"),
    (b" " * (MAX_SUBMISSION_BYTES + 1), "bad_manifest"),
    (_bytes(recipe(extra="field")), "bad_manifest"),
    (_bytes(recipe(base={"repo": "../../etc", "revision": REV})), "bad_manifest"),
    (_bytes(recipe(base={"repo": "a/b", "revision": "main"})), "bad_manifest"),
    (_bytes(merge()), "bad_manifest"),  # a merge manifest in the recipe competition
])
def test_hostile_or_wrong_manifests_are_rejected(raw, code):
    assert _code(raw) == code


def test_a_settings_hash_that_does_not_match_is_bad():
    manifest = recipe()
    manifest["recipe"]["settings"]["lr"] = 1.0
    assert _code(_bytes(manifest)) == "bad_manifest"


def test_recipe_rules():
    over = recipe()
    over["recipe"]["train_seconds"] = comps.LOCAL_EFFICIENT.constraints.submission.max_hours * 3600 + 1
    assert _code(_bytes(over)) == "over_budget"
    local_file = recipe()
    with_data(local_file, ["/home/me/secret.jsonl"])
    assert _code(_bytes(local_file)) == "closed_data"
    for entry in ("me/secret.jsonl", "../x/y", "notes"):
        with_data(local_file, [entry])
        assert _code(_bytes(local_file)) == "closed_data"
    hub = recipe()
    with_data(hub, ["databricks/databricks-dolly-15k", "dyck"])  # published, or a listed generator
    check_submission(_bytes(hub), comps.LOCAL_EFFICIENT.constraints, LLAMA)
    assert _code(_bytes(recipe(base={"repo": "bases/tiny-llama-instruct", "revision": REV}))) == "instruct_base"


@pytest.mark.parametrize(("repo", "config", "code"), [
    ("meta-llama/Llama-2-7b-chat-hf", {"model_type": "llama"}, "instruct_base"),
    ("google/gemma-7b-it", {"model_type": "gemma"}, "instruct_base"),
    ("bases/tiny-llama-base", {"model_type": "llama", "_name_or_path": "org/llama-sft"}, "instruct_base"),
    ("microsoft/phi-2", {"model_type": "phi"}, "unapproved_family"),
    ("org/mystery-7b", {"model_type": "llama"}, "unsure_base"),  # the name names no family
    ("Qwen/Qwen2.5-7B", {"model_type": "llama"}, "unsure_base"),  # name and config disagree
    ("org/newthing-1b", {"model_type": "newthing"}, "unsure_base"),
])
def test_base_judgement_rejects_with_the_reason(repo, config, code):
    with pytest.raises(ModelRejected) as err:
        judge_base(repo, config, FAMILIES)
    assert err.value.reason == code
    if code == "unsure_base":
        assert str(err.value).startswith("unsure")


@pytest.mark.parametrize(("repo", "model_type"), [
    ("meta-llama/Llama-2-7b-hf", "llama"), ("EleutherAI/pythia-1b", "gpt_neox"),
    ("Qwen/Qwen2.5-7B", "qwen2"), ("mistralai/Mistral-7B-v0.1", "mistral"), ("tiiuae/falcon-7b", "falcon"),
    ("openlm-research/open_llama_3b", "llama"), ("EleutherAI/gpt-j-6b", "gptj"),
])
def test_published_base_models_pass(repo, model_type):
    judge_base(repo, {"model_type": model_type}, FAMILIES)


def test_merge_rules():
    rules = comps.LOCAL_MERGING
    stranger = merge(experts=[{"repo": "someone/else", "revision": REV, "license": "apache-2.0"}])
    assert _code(_bytes(stranger), rules) == "unlisted_expert"
    licence = merge(experts=[{"repo": "experts/tiny-boolq", "revision": REV, "license": "cc-by-nc-4.0"}])
    assert _code(_bytes(licence), rules) == "bad_license"
    slow = merge(merge_seconds=rules.constraints.submission.max_hours * 3600 + 1)
    assert _code(_bytes(slow), rules) == "over_budget"
    big = merge(peak_memory_bytes=rules.constraints.submission.max_memory_bytes + 1)
    assert _code(_bytes(big), rules) == "over_budget"
    assert _code(_bytes(merge(method="frankenmerge")), rules) == "bad_manifest"


def test_a_pinned_expert_list_rejects_another_revision():
    from finetune.competition import Expert, ExpertList, SubmissionRules

    pinned = ExpertList(competition="X", experts=(Expert(repo="experts/tiny-boolq", revision="b" * 40,
                                                         license="apache-2.0"),))
    constraints = comps.LOCAL_MERGING.constraints.model_copy(update={
        "submission": SubmissionRules(kind="merge", max_hours=1, experts=pinned)})
    manifest = merge(base=None, experts=[{"repo": "experts/tiny-boolq", "revision": REV, "license": "apache-2.0"}])
    with pytest.raises(ModelRejected) as err:
        check_submission(_bytes(manifest), constraints, LLAMA)
    assert err.value.reason == "unlisted_expert"


def test_miner_text_in_messages_is_escaped():
    hostile = recipe(base={"repo": "bases/tiny-llama-base", "revision": REV})
    with_data(hostile, ["[red]x\x1b[2J"])
    with pytest.raises(ModelRejected) as err:
        check_submission(_bytes(hostile), comps.LOCAL_EFFICIENT.constraints, LLAMA)
    assert "\x1b" not in str(err.value)


def test_declared_data_must_be_what_the_settings_train_on():
    """Else the open-data rule checks one list and a re-run trains on another (a closed file)."""
    manifest = recipe()
    settings = {**manifest["recipe"]["settings"], "data": ["/home/me/closed.jsonl"]}
    manifest["recipe"].update(settings=settings, settings_sha256=settings_sha256(settings))
    assert _code(_bytes(manifest)) == "bad_manifest"


def test_non_finite_or_huge_numbers_are_bad_manifests_not_check_failures():
    """NaN settings once raised ValueError in the hash (check_failed, retried for ever)."""
    for raw in (b'{"lr": NaN}', b'{"lr": Infinity}'):
        text = json.dumps(recipe()).replace('{"lr": 0.002', raw.decode()[:-1], 1)
        assert _code(text.encode()) == "bad_manifest"
    huge = merge(peak_memory_bytes=10**400)
    assert _code(_bytes(huge), comps.LOCAL_MERGING) == "bad_manifest"


@pytest.mark.parametrize("repo", [
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "cognitivecomputations/dolphin-2.9-llama3-8b",
    "x/Llama2Instruct", "x/llama-3-8B-Instr", "x/Llama-3-8B-I", "teknium/OpenHermes-2.5-Llama-7B",
])
def test_glued_or_abbreviated_instruct_marks_are_found(repo):
    assert _code(_bytes(recipe(base={"repo": repo, "revision": REV}))) == "instruct_base"


def test_expert_case_and_duplicates():
    upper = merge()
    upper["experts"][0] = {**upper["experts"][0], "repo": "EXPERTS/TINY-BOOLQ", "license": "Apache-2.0"}
    check_submission(_bytes(upper), comps.LOCAL_MERGING.constraints, LLAMA)  # the Hub ignores case
    twice = merge()
    twice["experts"] = [twice["experts"][0]] * 3
    assert _code(_bytes(twice), comps.LOCAL_MERGING) == "bad_manifest"
