"""Bad model files: each rejected with its reason, the cheap ones before any download; and
models that poison the evaluation (NaN weights, too slow) scored inf in the real worker."""

from __future__ import annotations

import math

import pytest

import competitions
from finetune.chain import ModelId
from finetune.datasets import DataConfig
from finetune.eval import evaluate_model, prepare_task_data
from finetune.validator.worker import run_isolated
from tests.validator import fault_models as bad
from tests.validator.fault_runner import hotkey_of, stand_in_evaluate
from tests.validator.helpers import make_subnet, make_validator, publish_model

LOCAL = competitions.LOCAL_SCHEDULE
REASONING = competitions.LOCAL_REASONING
MIB = 1024**2
PLACEHOLDER_HASH = "A" * 43 + "="
FIRST_UP = "model.layers.0.mlp.up_proj.weight"
FIRST_Q = "model.layers.0.self_attn.q_proj.weight"


def _oversized(src, dst):
    bad.copy_model(src, dst)
    with open(dst / "vocab.txt", "wb") as handle:  # an allowed file; sparse, so cheap to write
        handle.truncate(REASONING.constraints.max_bytes + MIB)
    return dst


# hotkey -> (builder of the model folder, expected reason, rejected before download?)
BUILT = {
    "toolarge": (_oversized, "too_large", True),
    "bert": (lambda s, d: bad.with_architecture(s, d, "BertForMaskedLM", "bert"), "bad_architecture", False),
    "unlisted": (lambda s, d: bad.with_architecture(s, d, "GPT2LMHeadModel", "gpt2"), "bad_architecture", False),
    "disguised": (lambda s, d: bad.with_architecture(s, d, "MistralForCausalLM"), "bad_architecture", False),
    "remote": (bad.with_remote_code, "remote_code", False),
    "truncated": (bad.with_truncated_weights, "corrupt_safetensors", True),
    "liar": (bad.with_lying_header, "corrupt_safetensors", True),
    # An extra tensor no layer uses: the headers count it, the model does not.
    "unused": (lambda s, d: bad.with_extra_tensor(s, d, REASONING.constraints.max_params + 1), "unused_weights", False),
    # More elements than any model within the limit can store (tied copies at most double).
    "huge": (lambda s, d: bad.with_extra_tensor(s, d, 2 * REASONING.constraints.max_params + 1), "bad_param_count",
             True),
    "exploded": (lambda s, d: bad.with_scaled(s, d, FIRST_Q, 1e4), "weight_norms", False),
    "nanlayer": (lambda s, d: bad.with_nan(s, d, FIRST_UP), "weight_norms", False),
}
# hotkey -> (files of a revision our uploader would never write, expected reason)
PLANTED = {
    "pickle": (bad.pickle_only, "unsafe_files"),
    "code": (lambda m: {**bad.model_files(m), "modeling_evil.py": b"import os\n"}, "unsafe_files"),
    "escape": (lambda m: {**bad.model_files(m), "../escape.json": b"{}"}, "bad_file_name"),
}


def test_bad_model_files_are_rejected_with_reasons(tmp_path, tiny_model_dir, tmp_path_factory):
    chain, store = make_subnet(tmp_path, ["healthy", *BUILT, *PLANTED])
    publish_model(chain, store, tiny_model_dir, hotkey="healthy", repo_id="good/model", competition_id=REASONING.id)
    workdir = tmp_path_factory.mktemp("bad_models")
    for hotkey, (build, _, _) in BUILT.items():
        model_dir = build(tiny_model_dir, workdir / hotkey)
        publish_model(chain, store, model_dir, hotkey=hotkey, repo_id=f"{hotkey}/model", competition_id=REASONING.id)
    for hotkey, (files, _) in PLANTED.items():
        commit = bad.plant_revision(store, f"{hotkey}/model", files(tiny_model_dir))
        model_id = ModelId.for_repo(f"{hotkey}/model", commit=commit, secure_hash=PLACEHOLDER_HASH,
                                    competition_id=REASONING.id)
        chain.publish_commitment(hotkey, model_id.to_commitment())
    chain.advance(5)

    evaluate = stand_in_evaluate({"healthy": 1.0})
    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=evaluate)
    results = validator.run_once()

    models = validator.state.models
    expected = {h: reason for h, (_, reason, _) in BUILT.items()} | {h: r for h, (_, r) in PLANTED.items()}
    assert {h: m.reason for h, m in models.items() if m.status == "rejected"} == expected
    assert all(models[h].detail for h in expected)
    # Size, file names and types and the safetensors headers are checked before downloading.
    cache = tmp_path / "models"
    not_fetched = {h for h, (_, _, early) in BUILT.items() if early} | set(PLANTED)
    assert not any((cache / h).exists() for h in not_fetched)
    assert not (store.root.parent / "escape.json").exists()
    assert evaluate.calls == ["healthy"]
    assert [(m.hotkey, m.score) for m in results[0].models] == [("healthy", 1.0)]


SLOW_DEADLINE_S = 0.02  # even a warm worker needs far longer to load and score a tiny model


def _real_worker(slow_hotkey: str):
    """The real isolated worker and `evaluate_model`; one miner gets a deadline it cannot meet."""

    def evaluate(model_dir, competition, task_data, *, deadline_s, options, should_abort, memory_bytes=None):
        if hotkey_of(model_dir) == slow_hotkey:
            deadline_s = SLOW_DEADLINE_S
        return run_isolated(model_dir, competition, task_data, deadline_s=deadline_s, options=options,
                            should_abort=should_abort, memory_bytes=memory_bytes)

    return evaluate


def test_nan_and_slow_models_score_inf_in_the_real_worker(tmp_path, tiny_model_dir, tmp_path_factory):
    chain, store = make_subnet(tmp_path, ["healthy", "nanhead", "slow"])
    workdir = tmp_path_factory.mktemp("worker_models")
    publish_model(chain, store, tiny_model_dir, hotkey="healthy", repo_id="good/model", competition_id=REASONING.id)
    nan_dir = bad.with_nan(tiny_model_dir, workdir / "nan")  # the output head: norms cannot see it
    publish_model(chain, store, nan_dir, hotkey="nanhead", repo_id="nan/model", competition_id=REASONING.id)
    slow_dir = bad.variant(tiny_model_dir, workdir / "slow")
    publish_model(chain, store, slow_dir, hotkey="slow", repo_id="slow/model", competition_id=REASONING.id)
    chain.advance(5)

    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=_real_worker("slow"), model_deadline_s=300)
    (result,) = validator.run_once()

    by_hotkey = result.by_hotkey()
    assert math.isinf(by_hotkey["nanhead"].score) and by_hotkey["nanhead"].reason.startswith("non_finite")
    assert math.isinf(by_hotkey["slow"].score) and by_hotkey["slow"].reason.startswith("timeout")
    healthy = by_hotkey["healthy"]
    assert math.isfinite(healthy.score) and healthy.reason == ""
    assert result.step_weights == {"healthy": 1.0, "nanhead": 0.0, "slow": 0.0}
    history = validator.state.competition(REASONING.id).history
    assert history["nanhead"][-1].reason.startswith("non_finite") and history["slow"][-1].failed

    # The worker's score is the one a direct, in-process evaluation gives on the round's data.
    counts = {t.name: 2 for t in REASONING.tasks}
    data = prepare_task_data(REASONING, seed=result.seed, config=DataConfig(offline=True), sample_counts=counts)
    direct = evaluate_model(tiny_model_dir, REASONING, data)
    assert healthy.score == pytest.approx(direct.total, rel=1e-6)
