"""The commitment format: exact rules, and property tests that decoding never crashes."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finetune.chain.model_id import (
    MAX_COMMITMENT_BYTES,
    ModelId,
    Rejection,
    decode_commitment,
    parse_commitment,
    validate_repo_id,
)
from finetune.errors import InvalidCommitment
from finetune.protocol import REFERENCE_31

COMMIT = "0123456789abcdef0123456789abcdef01234567"
HASH = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
GOOD = f"alice:tiny-model:{COMMIT}:{HASH}:2"


def test_parse_and_reencode():
    model = parse_commitment(GOOD)
    assert model == ModelId("alice", "tiny-model", COMMIT, HASH, 2)
    assert model.repo_id == "alice/tiny-model"
    assert model.to_commitment() == GOOD
    assert parse_commitment(GOOD.encode()) == model
    assert (
        ModelId.for_repo("alice/tiny-model", commit=COMMIT, secure_hash=HASH, competition_id=2)
        == model
    )


def test_longest_repo_id_fits_128_bytes():
    repo = "a" * 18 + "/" + "b" * 19  # 38 characters
    model = ModelId.for_repo(repo, commit=COMMIT, secure_hash=HASH, competition_id=255)
    assert len(model.to_commitment().encode()) == MAX_COMMITMENT_BYTES
    with pytest.raises(InvalidCommitment, match="at most 38"):
        validate_repo_id("a" * 19 + "/" + "b" * 19)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        (f"alice:m:{COMMIT}:{HASH}", "5 ':'-separated fields"),
        (f"alice:m:x:{COMMIT}:{HASH}:1", "5 ':'-separated fields"),
        (f"alice:m:{COMMIT.upper()}:{HASH}:1", "40 lowercase hex"),
        (f"alice:m:{COMMIT[:-1]}:{HASH}:1", "40 lowercase hex"),
        (f"alice:m:{COMMIT}:{HASH[:-1]}:1", "secure hash"),
        (f"alice:m:{COMMIT}:{'A' * 42}B=:1", "secure hash"),  # non-canonical trailing bits
        (f"alice:m:{COMMIT}:{HASH}:01", "leading zero"),
        (f"alice:m:{COMMIT}:{HASH}:-1", "without sign"),
        (f"alice:m:{COMMIT}:{HASH}:256", "0..255"),
        (f"alice:m:{COMMIT}:{HASH}: 1", "decimal integer"),
        (f"al ice:m:{COMMIT}:{HASH}:1", "letters, digits"),
        (f"alice:..:{COMMIT}:{HASH}:1", "start or end"),
        (f"alice:a..b:{COMMIT}:{HASH}:1", "'..'"),
        (f"alice:a--b:{COMMIT}:{HASH}:1", "'--'"),
        (f"-alice:m:{COMMIT}:{HASH}:1", "start or end"),
        (f"alice:m.:{COMMIT}:{HASH}:1", "start or end"),
        (f"alice/x:m:{COMMIT}:{HASH}:1", "exactly one '/'"),
        (f":m:{COMMIT}:{HASH}:1", "letters, digits"),
        (f"alicé:m:{COMMIT}:{HASH}:1", "letters, digits"),
        ("", "5 ':'-separated fields"),
        ("x" * 129, "at most 128 bytes"),
    ],
)
def test_each_rule_is_named_and_the_value_quoted(text, rule):
    with pytest.raises(
        InvalidCommitment, match=rule.replace("(", r"\(").replace(".", r"\.")
    ) as info:
        parse_commitment(text)
    assert info.value.reason == "invalid_commitment"
    assert str(info.value).endswith(": " + info.value.facts["value"])  # the bad value, quoted
    assert isinstance(decode_commitment(text), Rejection)


@pytest.mark.parametrize(
    "data",
    [None, 12, 1.5, ["a"], {"a": 1}, b"\xff\xfe", "0xfffe", "\ud800", b"x" * 10_000, "y" * 10**6],
)
def test_decode_rejects_junk_without_raising(data):
    result = decode_commitment(data)
    assert isinstance(result, Rejection) and result.reason


class _UnprintableData:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize("data", [10**5000, _UnprintableData()], ids=["huge-int", "bad-repr"])
def test_decode_never_raises_even_when_the_value_cannot_be_quoted(data):
    result = decode_commitment(data)
    assert isinstance(result, Rejection) and "text or bytes" in result.reason


def test_quoted_values_are_truncated():
    result = decode_commitment("z" * 10**6)
    assert isinstance(result, Rejection) and len(result.reason) < 200


def test_hex_rendering_of_chain_bytes_is_decoded():
    # bittensor renders non-utf-8 Raw bytes as 0x-hex; utf-8 ones arrive as text.
    assert decode_commitment("0x" + GOOD.encode().hex()) == parse_commitment(GOOD)
    assert "utf-8" in decode_commitment("0xff00").reason


def test_model_id_constructor_validates():
    with pytest.raises(InvalidCommitment):
        ModelId("alice", "m", COMMIT, HASH, True)  # bool is not a competition id
    with pytest.raises(InvalidCommitment):
        ModelId("alice", "m:x", COMMIT, HASH, 1)
    with pytest.raises(InvalidCommitment):
        ModelId("../etc", "m", COMMIT, HASH, 1)


_part_chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
_parts = st.text(_part_chars, min_size=1, max_size=18)


@st.composite
def model_ids(draw) -> ModelId:
    """Random ids that satisfy every rule (filtering the boundary rules)."""
    namespace = draw(_parts.filter(lambda p: _ok_part(p)))
    name = draw(_parts.filter(lambda p: _ok_part(p)))
    commit = draw(st.text("0123456789abcdef", min_size=40, max_size=40))
    digest = draw(st.binary(min_size=32, max_size=32))
    cid = draw(st.integers(0, 255))
    return ModelId(namespace, name, commit, base64.b64encode(digest).decode(), cid)


def _ok_part(part: str) -> bool:
    return part[0] not in ".-" and part[-1] not in ".-" and ".." not in part and "--" not in part


@settings(max_examples=150, deadline=None)
@given(model_ids())
def test_round_trip_for_valid_ids(model):
    text = model.to_commitment()
    assert len(text.encode()) <= MAX_COMMITMENT_BYTES
    assert parse_commitment(text) == model
    assert decode_commitment(text.encode()) == model


_near_valid = st.builds(
    lambda a, b, c, d, e: ":".join([a, b, c, d, e]),
    st.text(max_size=20),
    st.text(max_size=20),
    st.one_of(st.just(COMMIT), st.text("0123456789abcdefABCDEF", max_size=41)),
    st.one_of(st.just(HASH), st.text(max_size=45)),
    st.one_of(st.integers(-5, 300).map(str), st.text(max_size=4)),
)


@st.composite
def mutated_ids(draw) -> str:
    """A valid commitment with one character inserted, replaced or deleted."""
    text = draw(model_ids()).to_commitment()
    at = draw(st.integers(0, len(text) - 1))
    char = draw(st.characters())
    how = draw(st.sampled_from(["insert", "replace", "delete"]))
    tail = text[at:] if how == "insert" else text[at + 1 :]
    return text[:at] + ("" if how == "delete" else char) + tail


@settings(max_examples=250, deadline=None)
@given(
    st.one_of(
        mutated_ids(),
        mutated_ids().map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.text(max_size=300),
        st.binary(max_size=300),
        _near_valid,
        _near_valid.map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.binary(max_size=200).map(lambda b: "0x" + b.hex()),
        st.none(),
        st.integers(),
        st.lists(st.integers(0, 255), max_size=10),
    )
)
def test_decode_never_raises_and_accepted_ids_reencode_identically(data):
    result = decode_commitment(data)
    assert isinstance(result, (ModelId, Rejection))
    if isinstance(result, ModelId):
        text = result.to_commitment()
        if isinstance(data, (bytes, bytearray)):
            data = data.decode("utf-8")
        elif isinstance(data, str) and data.startswith("0x") and ":" not in data:
            data = bytes.fromhex(data[2:]).decode("utf-8")
        assert text == data
        assert len(text.encode()) <= MAX_COMMITMENT_BYTES


# -- the reference's reading (protocol reference-3.1) ----------------------------------------
REF = REFERENCE_31.checks


@pytest.mark.parametrize(
    ("field", "competition_id"),
    [("3", 3), ("03", 3), (" 3", 3), ("3\n", 3), ("+3", 3), ("1_0", 10), ("\u0663", 3),
     ("-1", -1), ("99999999999999999999", 99999999999999999999)],
)  # fmt: skip
def test_reference_reads_the_competition_id_as_int_does(field, competition_id):
    text = f"alice:m:{COMMIT}:{HASH}:{field}"
    model = decode_commitment(text, rules=REF)
    assert isinstance(model, ModelId) and model.competition_id == competition_id
    if field != str(competition_id):
        assert isinstance(decode_commitment(text), Rejection)  # ours: canonical decimal only


@pytest.mark.parametrize("field", ["3.0", "", "x", "0x3"])
def test_reference_refuses_what_int_refuses(field):
    assert isinstance(decode_commitment(f"alice:m:{COMMIT}:{HASH}:{field}", rules=REF), Rejection)


def test_reference_reads_legacy_and_extra_fields_and_any_secure_hash():
    legacy = decode_commitment(f"alice:m:{COMMIT}:{HASH}", rules=REF)
    assert isinstance(legacy, ModelId) and (legacy.competition_id, legacy.secure_hash) == (0, HASH)
    extra = decode_commitment(f"alice:m:{COMMIT}:{HASH}:3:more:fields", rules=REF)
    assert isinstance(extra, ModelId) and extra.competition_id == 3
    odd = decode_commitment(f"alice:m:{COMMIT}:{'S' * 43}=:3", rules=REF)  # never matches a hash
    assert isinstance(odd, ModelId) and odd.secure_hash == "S" * 43 + "="
    for text in (f"alice:m:{COMMIT}", "", "::::"):
        assert isinstance(decode_commitment(text, rules=REF), Rejection)


def test_reference_repo_ids_as_long_as_the_field_allows():
    for length in (39, 40):
        namespace, name = "n" * 5, "m" * (length - 6)
        text = f"{namespace}:{name}:{COMMIT}:{HASH}:3"
        assert len(text.encode()) <= MAX_COMMITMENT_BYTES
        model = decode_commitment(text, rules=REF)
        assert isinstance(model, ModelId) and len(model.repo_id) == length
        assert isinstance(decode_commitment(text), Rejection)  # ours: at most 38
    too_long = f"nnnnn:{'m' * 35}:{COMMIT}:{HASH}:3"  # 129 bytes: no chain field holds it
    assert isinstance(decode_commitment(too_long, rules=REF), Rejection)


@pytest.mark.parametrize(
    "text",
    [f"alice:m:None:{HASH}:3", f"alice:m:abc:{HASH}:3", f"alice:m:{COMMIT.upper()}:{HASH}:3",
     f":m:{COMMIT}:{HASH}:3", f"alice:a/b:{COMMIT}:{HASH}:3", f"al ice:m:{COMMIT}:{HASH}:3",
     f"../x:m:{COMMIT}:{HASH}:3"],
)  # fmt: skip
def test_reference_still_needs_a_pinned_commit_and_a_hub_repo_name(text):
    assert isinstance(decode_commitment(text, rules=REF), Rejection)


@settings(max_examples=150, deadline=None)
@given(model_ids())
def test_strict_ids_read_the_same_under_the_reference(model):
    assert decode_commitment(model.to_commitment(), rules=REF) == model


@settings(max_examples=150, deadline=None)
@given(st.one_of(mutated_ids(), st.text(max_size=300), st.binary(max_size=300), _near_valid))
def test_reference_decode_never_raises(data):
    result = decode_commitment(data, rules=REF)
    assert isinstance(result, (ModelId, Rejection))
    if isinstance(result, ModelId):
        assert len(result.to_commitment().encode("utf-8", "surrogatepass")) <= MAX_COMMITMENT_BYTES
