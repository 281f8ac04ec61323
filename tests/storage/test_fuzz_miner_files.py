"""Property-based fuzzing of every file a miner controls, through the post-download checks as
the validator runs them (a child process with a memory limit and a deadline).

Whatever the files hold, the check ends in one of three ways: the model passes, it is rejected
with a reason code a miner can act on, or the child runs out of its memory or time budget
(which the validator records as `check_out_of_memory` / `check_timeout`). It never raises
anything else, and the test process itself never grows.
"""

from __future__ import annotations

import json
import resource
import shutil
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetune.errors import ModelRejected
from finetune.validator.isolation import run_in_child
from tests.storage.conftest import make_constraints

# Reason codes a rejection may carry: each is explained to miners (docs/miner.md).
KNOWN_REASONS = {
    "bad_config", "bad_architecture", "remote_code", "unsafe_files", "oversized_file",
    "corrupt_safetensors", "too_many_tensors", "bad_param_count", "missing_weights",
    "unused_weights", "weight_norms", "norm_rule_unsupported", "unapproved_family",
}  # fmt: skip

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)
CONFIG_KEYS = ("architectures", "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "intermediate_size", "vocab_size", "tie_word_embeddings", "head_dim",
               "max_position_embeddings", "rope_scaling", "auto_map", "torch_dtype", "pad_token_id")
# Sizes a miner might try to make the check itself expensive with; the child's limits hold them.
sizes = st.one_of(st.integers(min_value=-3, max_value=4096), st.sampled_from([10**5, 10**7, 2**31, 2**63]))


def _check_job(model_dir: str) -> str:
    from finetune.storage import check_model_dir

    try:
        check_model_dir(model_dir, make_constraints(max_params=10**12, min_params=0))
    except ModelRejected as exc:
        return f"rejected:{exc.reason}"
    return "ok"


def _header_file(header: object, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


@st.composite
def hostile_folders(draw):
    edits: dict[str, bytes] = {}
    config_edits = draw(st.dictionaries(st.sampled_from(CONFIG_KEYS), st.one_of(json_values, sizes), max_size=4))
    edits["config.json"] = b"MERGE" + json.dumps(config_edits).encode()
    which = draw(st.sampled_from(["tokenizer_config.json", "generation_config.json", "tokenizer.json",
                                  "chat_template.jinja", "model.safetensors", "none"]))
    if which == "model.safetensors":
        header = draw(st.dictionaries(st.text(max_size=30), json_values, max_size=5))
        edits[which] = _header_file(header, draw(st.binary(max_size=64)))
    elif which == "chat_template.jinja":
        edits[which] = draw(st.text(max_size=200)).encode()
    elif which != "none":
        edits[which] = json.dumps(draw(json_values)).encode()
    return edits


def _apply(base: Path, edits: dict[str, bytes], dest: Path) -> Path:
    shutil.copytree(base, dest)
    for name, data in edits.items():
        if data.startswith(b"MERGE"):
            config = json.loads((dest / name).read_text())
            config.update(json.loads(data[len(b"MERGE"):]))
            (dest / name).write_text(json.dumps(config))
        else:
            (dest / name).write_bytes(data)
    return dest


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=hostile_folders())
def test_hostile_files_end_in_a_verdict_never_a_crash(tiny_model_dir, edits):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as tmp:
        folder = _apply(tiny_model_dir, edits, Path(tmp) / "m")
        outcome = run_in_child(_check_job, (str(folder),), deadline_s=60, memory_bytes=512 << 20)
    assert outcome.status in ("ok", "out_of_memory", "timeout"), outcome
    if outcome.status == "ok":
        verdict = outcome.value
        assert verdict == "ok" or verdict.split(":", 1)[1] in KNOWN_REASONS, verdict
    # The validator's own process only waited: its peak resident size did not move by much.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024
