import math

import pytest

import competitions as comps
from competitions.definitions import GIB
from finetune.competition import Aggregation, Method, NormKind


def _weights(c):
    return {t.name: t.weight for t in c.tasks}


def test_spec_table_constraints():
    b7, instruct, reasoning = comps.B7_MULTICHOICE, comps.INSTRUCT_8B, comps.DISTILLED_REASONING_3B
    assert (b7.id, instruct.id, reasoning.id, comps.SN9_MODEL.id) == (2, 3, 4, 1)
    assert b7.constraints.max_params == 6_900_000_000
    assert b7.constraints.tokenizer == comps.GPT4_TOKENIZER == "Xenova/gpt-4"
    assert b7.constraints.eval_block_delay == 460
    assert b7.constraints.max_bytes == 15 * GIB
    assert instruct.constraints.max_params == 8_100_000_000
    assert instruct.constraints.tokenizer is None
    assert instruct.constraints.eval_block_delay == 1600
    assert instruct.constraints.max_bytes == 20 * GIB
    # The reference's lists: no Qwen2 anywhere; its norm rule admits Llama, Mistral, Gemma(2).
    assert "Qwen2ForCausalLM" not in instruct.constraints.allowed_architectures
    assert "LlamaForCausalLM" in instruct.constraints.allowed_architectures
    assert (reasoning.constraints.min_params, reasoning.constraints.max_params) == (
        3_200_000_000,
        3_400_000_000,
    )
    assert reasoning.constraints.sequence_length == 16_384
    assert comps.SN9_MODEL.constraints.eval_block_delay == 1200
    for c in (b7, instruct, reasoning, comps.SN9_MODEL):
        assert c.constraints.load_dtype == "bfloat16"


def test_epsilons():
    e = {c.name: c.constraints.epsilon for c in comps.ALL_COMPETITIONS}
    assert (e["B7_MULTICHOICE"].start, e["B7_MULTICHOICE"].end) == (0.05, 0.01)
    assert e["B7_MULTICHOICE"].decay_blocks == 36_000
    assert e["INSTRUCT_8B"].decay_blocks == 7_200
    assert e["DISTILLED_REASONING_3B"].decay_blocks == 21_600
    assert (e["SN9_MODEL"].start, e["SN9_MODEL"].end) == (0.005, 0.001)


def test_norm_limits_where_the_reference_uses_them():
    for competition in (comps.B7_MULTICHOICE, comps.INSTRUCT_8B, comps.DISTILLED_REASONING_3B):
        assert competition.constraints.norm_limits is not None


def test_instruct_task_weights_per_period():
    first = {"SYNTHETIC_MMLU": 0.75, "WORD_SORTING": 0.05, "FINEWEB": 0.10, "IF_EVAL_V2": 0.10}
    second = {"SYNTHETIC_MMLU": 0.30, "WORD_SORTING": 0.05, "FINEWEB": 0.35, "IF_EVAL_V2": 0.30}
    assert _weights(comps.B7_MULTICHOICE) == first
    assert _weights(comps.INSTRUCT_8B) == first
    assert _weights(comps.INSTRUCT_8B_V2) == second
    assert _weights(comps.DISTILLED_REASONING_3B) == {
        "SYNTHETIC_1_SFT": 0.5,
        "CODEFORCES_COTS": 0.5,
    }


def test_task_details_match_spec():
    c = comps.INSTRUCT_8B
    mmlu, sorting, fineweb, ifeval = (c.task(n) for n in _weights(c))
    assert mmlu.method is Method.MULTIPLE_CHOICE and mmlu.dataset == "synthetic_mmlu"
    assert (mmlu.samples, mmlu.min_samples) == (700, 50)
    assert (mmlu.generation.max_new_tokens, mmlu.generation.repetition_penalty) == (20, 1.1)
    assert sorting.method is Method.REFERENCE_LOSS and sorting.samples == 400
    assert sorting.normalization.kind is NormKind.INVERSE_EXPONENTIAL
    assert sorting.normalization.ceiling == 40
    assert fineweb.method is Method.TEXT_LOSS and fineweb.normalization.ceiling == 20
    assert ifeval.method is Method.IF_EVAL and ifeval.dataset == "if_eval_v2"
    assert (ifeval.generation.max_new_tokens, ifeval.generation.repetition_penalty) == (200, 1.2)
    r = comps.DISTILLED_REASONING_3B
    assert r.task("SYNTHETIC_1_SFT").samples == 120
    assert r.task("CODEFORCES_COTS").samples == 100
    assert {t.method for t in r.tasks} == {Method.REFERENCE_LOSS}


def test_seed_competitions():
    eff, merge = comps.EFFICIENT_1GPU_1DAY, comps.MERGE_GENERALIST
    assert (eff.id, merge.id) == (5, 6)
    assert eff.aggregation is Aggregation.HELM
    assert "llama" in eff.constraints.approved_families
    assert "DYCK_LANGUAGE" in {t.name for t in eff.tasks}
    assert merge.constraints.max_params <= 8_000_000_000
    assert {(t.name, t.method, t.dataset) for t in merge.tasks} == {
        ("BOOLQ", Method.EXACT_ANSWER, "boolq"),
        ("MAWPS", Method.EXACT_ANSWER, "mawps"),
        ("HELD_OUT", Method.REFERENCE_LOSS, "held_out"),
    }
    assert merge.aggregation is Aggregation.HELM
    assert comps.dyck_language(1.0).dataset == "dyck"
    # Each names the manifest it needs; the merge's published experts carry research licences.
    assert eff.constraints.submission.kind == "recipe" and eff.constraints.submission.max_hours == 24
    rules = merge.constraints.submission
    assert rules.kind == "merge" and rules.experts.base is not None
    assert all(e.license in rules.licenses for e in rules.experts.entries())


def test_local_twins_of_the_seed_competitions():
    for twin, real in ((comps.LOCAL_EFFICIENT, comps.EFFICIENT_1GPU_1DAY), (comps.LOCAL_MERGING, comps.MERGE_GENERALIST)):
        assert twin.id > 100 and twin.aggregation is real.aggregation is Aggregation.HELM
        assert twin.constraints.submission.kind == real.constraints.submission.kind
        assert twin.constraints.max_params <= 5_000_000 and all(t.samples <= 10 for t in twin.tasks)
        assert twin.constraints.epsilon.start == 0.0
    assert {t.name for t in comps.LOCAL_MERGING.tasks} == {t.name for t in comps.MERGE_GENERALIST.tasks}
    assert comps.LOCAL_EFFICIENT.constraints.approved_families == comps.EFFICIENT_1GPU_1DAY.constraints.approved_families


def test_local_competitions_fit_the_tiny_models():
    for c in (comps.LOCAL_INSTRUCT, comps.LOCAL_REASONING):
        k = c.constraints
        assert k.max_params <= 5_000_000 and k.load_dtype == "float32"
        assert k.sequence_length == 512 and k.tokenizer is None
        assert "LlamaForCausalLM" in k.allowed_architectures
        assert all(t.samples <= 10 for t in c.tasks)
    real = {t.name for t in comps.INSTRUCT_8B.tasks} | {
        t.name for t in comps.DISTILLED_REASONING_3B.tasks
    }
    local = {t.name for c in (comps.LOCAL_INSTRUCT, comps.LOCAL_REASONING) for t in c.tasks}
    assert local == real


def test_ids_and_names_are_one_to_one_and_weights_sum_to_one():
    pairs = {(c.id, c.name) for c in comps.ALL_COMPETITIONS}
    assert len({i for i, _ in pairs}) == len({n for _, n in pairs}) == len(pairs)
    for c in comps.ALL_COMPETITIONS:
        assert math.isclose(sum(t.weight for t in c.tasks), 1.0)


def test_every_scheduled_competition_is_listed():
    listed = {id(c) for c in comps.ALL_COMPETITIONS}
    for schedule in (comps.SCHEDULE, comps.LOCAL_SCHEDULE):
        for entry in schedule.entries:
            assert all(id(s.competition) in listed for s in entry.competitions)


def test_dataset_ids_are_registered_loaders():
    datasets = pytest.importorskip("finetune.datasets.registry")
    known = set(datasets.known_datasets())
    used = {t.dataset for c in comps.ALL_COMPETITIONS for t in c.tasks}
    assert used <= known, used - known
