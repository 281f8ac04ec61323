"""The model id a miner commits on chain, and its parsers (SPEC §2).

Text form: ``namespace:name:commit:secure_hash:competition_id``, at most 128 bytes so it fits
one ``Raw`` commitment field. ``namespace/name`` is the Hugging Face repo id, ``commit`` the
40-hex commit sha, ``secure_hash`` 44 characters of base64 (a SHA-256 digest) and
``competition_id`` an integer.

Two readings, chosen by the protocol's `CheckRules.commitment`:

- ``strict`` (ours, `parse_commitment`): exactly 5 fields, a repo id of at most 38
  characters, a canonical base64 secure hash and a canonical decimal id in 0..255.
- ``reference`` (`parse_reference_commitment`): what the reference's validator reads (the
  competition id as Python's `int` reads it, a 4-field legacy text as competition 0, extra
  fields ignored, any secure hash text, repo ids as long as 128 bytes allow), minus what no
  validator could ever download: a commit that is not 40 lowercase hex, repo names the Hub
  does not allow.

Chain data is untrusted: ``decode_commitment`` turns *anything* into a `ModelId` or a
`Rejection` and never raises. What it accepts:

- ``str``: the text itself. One exception: bittensor renders commitment bytes that are not
  utf-8 as ``"0x" + hex``. A string that is ``0x`` followed only by hex digits is therefore
  decoded as hex first (and then rejected unless the bytes are utf-8 and a valid id). A
  valid id always contains ``:``, so it can never be mistaken for hex.
- ``bytes`` / ``bytearray`` / ``memoryview``: must be utf-8.
- anything else (``None``, numbers, lists): rejected as "not text".
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import constants
from finetune.errors import InvalidCommitment
from finetune.protocol import NEXT, CheckRules

MAX_COMMITMENT_BYTES = constants.COMMITMENT_MAX_BYTES  # one Raw field holds Raw0..Raw128
MAX_REPO_ID_CHARS = constants.MAX_REPO_ID_LENGTH  # what the other fields leave of 128 bytes
MAX_COMPETITION_ID = 255

_PART = re.compile(r"[A-Za-z0-9._-]+")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SECURE_HASH = re.compile(r"[A-Za-z0-9+/]{43}=")
_COMPETITION_ID = re.compile(r"0|[1-9][0-9]{0,2}")
_HEX = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_QUOTE_CHARS = 60  # bad values are quoted, but a megabyte of garbage is not


def _quote(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int over the digit limit; quoting must not raise
        text = f"<unprintable {type(value).__name__}>"
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."


def _fail(rule: str, value: object) -> InvalidCommitment:
    return InvalidCommitment(f"{rule}: {_quote(value)}", rule=rule, value=_quote(value))


def _check_repo_part(part: str, what: str) -> None:
    if not _PART.fullmatch(part):
        raise _fail(f"{what} must be letters, digits, '-', '_' or '.'", part)
    if part[0] in ".-" or part[-1] in ".-":
        raise _fail(f"{what} must not start or end with '.' or '-'", part)
    if ".." in part or "--" in part:
        raise _fail(f"{what} must not contain '..' or '--'", part)


def _check_repo_parts(namespace: object, name: object) -> None:
    if not isinstance(namespace, str) or not isinstance(name, str):
        raise _fail("namespace and name must be strings", (namespace, name))
    _check_repo_part(namespace, "namespace")
    _check_repo_part(name, "repo name")


def validate_repo_id(repo_id: str) -> None:
    """Check a Hugging Face repo id as this subnet restricts it.

    Args:
        repo_id: ``namespace/name``.

    Raises:
        InvalidCommitment: the id is longer than 38 characters, does not hold exactly one
            '/', or a part has a character outside letters, digits, '-', '_', '.' (this also
            excludes ':' and any path traversal), starts or ends with '.'/'-', or holds
            '..'/'--'. The message quotes the bad value and names the rule.
    """
    if not isinstance(repo_id, str):
        raise _fail("repo id must be a string", repo_id)
    if len(repo_id) > MAX_REPO_ID_CHARS:
        raise _fail(f"repo id must be at most {MAX_REPO_ID_CHARS} characters", repo_id)
    if repo_id.count("/") != 1:
        raise _fail("repo id must contain exactly one '/'", repo_id)
    _check_repo_parts(*repo_id.split("/"))


@dataclass(frozen=True)
class ModelId:
    """A model id the chain can carry and a validator can use safely.

    Building one with bad fields raises `InvalidCommitment`. The format rules only our own
    protocol adds (a repo id of at most 38 characters, a canonical base64 secure hash, an id
    in 0..255) belong to the strict parser and to `for_repo`, not to this record: a
    reference-protocol validator must hold ids the reference reads.

    Attributes:
        namespace: Hub user or organisation.
        name: Hub repo name.
        commit: 40 lowercase hex characters, the Hub commit sha.
        secure_hash: the committed secure hash, as text without ':' (compared, never parsed).
        competition_id: the competition entered.
    """

    namespace: str
    name: str
    commit: str
    secure_hash: str
    competition_id: int

    def __post_init__(self) -> None:
        _check_repo_parts(self.namespace, self.name)
        if not isinstance(self.commit, str) or not _COMMIT.fullmatch(self.commit):
            raise _fail("commit must be 40 lowercase hex characters", self.commit)
        if not isinstance(self.secure_hash, str) or ":" in self.secure_hash:
            raise _fail("secure hash must be text without ':'", self.secure_hash)
        cid = self.competition_id
        if isinstance(cid, bool) or not isinstance(cid, int) or cid.bit_length() > 512:
            raise _fail("competition id must be an integer that fits the commitment", cid)
        text = self.to_commitment()
        if len(text.encode("utf-8", "surrogatepass")) > MAX_COMMITMENT_BYTES:
            raise _fail(f"commitment must be at most {MAX_COMMITMENT_BYTES} bytes", text)

    @classmethod
    def for_repo(
        cls, repo_id: str, *, commit: str, secure_hash: str, competition_id: int
    ) -> ModelId:
        """Build from a ``namespace/name`` repo id.

        Raises:
            InvalidCommitment: any field breaks its rule.
        """
        validate_repo_id(repo_id)
        namespace, name = repo_id.split("/")
        _check_strict_fields(secure_hash, competition_id)
        return cls(namespace, name, commit, secure_hash, competition_id)

    @property
    def repo_id(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    def to_commitment(self) -> str:
        """The text published on chain (at most 128 utf-8 bytes, checked on construction)."""
        return f"{self.namespace}:{self.name}:{self.commit}:{self.secure_hash}:{self.competition_id}"


def _check_strict_fields(secure_hash: object, competition_id: object) -> None:
    if not isinstance(secure_hash, str) or not _canonical_sha256_b64(secure_hash):
        raise _fail("secure hash must be base64 of 32 bytes (44 characters)", secure_hash)
    cid = competition_id
    if isinstance(cid, bool) or not isinstance(cid, int) or not 0 <= cid <= MAX_COMPETITION_ID:
        raise _fail(f"competition id must be an integer in 0..{MAX_COMPETITION_ID}", cid)


@dataclass(frozen=True)
class Rejection:
    """Why chain data is not a valid model id (`reason` quotes the bad value)."""

    reason: str


def _canonical_sha256_b64(value: str) -> bool:
    if not _SECURE_HASH.fullmatch(value):
        return False
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    # Re-encoding catches non-canonical trailing bits, so one digest has one spelling.
    return len(raw) == 32 and base64.b64encode(raw).decode("ascii") == value


def commitment_text(data: object) -> str | None:
    """Chain commitment data in one canonical text form, for records and comparison.

    Backends call this where they build `NeuronInfo`: bytes that are not utf-8 become ``0x`` +
    hex, as bittensor renders them (and as `decode_commitment` reads them); no data is None.
    """
    if data is None or isinstance(data, str):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + raw.hex()
    return repr(data)


def _as_text(data: object) -> str:
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if isinstance(data, str) and len(data) <= 2 * MAX_COMMITMENT_BYTES + 2 and _HEX.fullmatch(data):
        data = bytes.fromhex(data[2:])
    if isinstance(data, bytes):
        if len(data) > MAX_COMMITMENT_BYTES:
            raise _fail(f"commitment must be at most {MAX_COMMITMENT_BYTES} bytes", data)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _fail("commitment must be utf-8", data) from None
    if isinstance(data, str):
        return data
    raise _fail("commitment must be text or bytes", data)


def _checked_text(data: str | bytes) -> str:
    text = _as_text(data)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates cannot come from chain bytes
        raise _fail("commitment must be valid unicode", text) from None
    if size > MAX_COMMITMENT_BYTES:
        raise _fail(f"commitment must be at most {MAX_COMMITMENT_BYTES} bytes", text)
    return text


def parse_commitment(data: str | bytes) -> ModelId:
    """Parse chain commitment data into a `ModelId` by our strict rules (protocol ``next``).

    Args:
        data: the commitment as text, utf-8 bytes, or bittensor's ``0x``-hex rendering of
            non-utf-8 bytes (see the module docstring).

    Returns:
        The model id; ``parse_commitment(m.to_commitment()) == m`` for every valid ``m``.

    Raises:
        InvalidCommitment: the data is not a valid model id; the message names the broken
            rule and quotes the bad value.
    """
    parts = _checked_text(data).split(":")
    if len(parts) != 5:
        raise _fail("commitment must have 5 ':'-separated fields", ":".join(parts))
    namespace, name, commit, secure_hash, competition = parts
    validate_repo_id(f"{namespace}/{name}")
    if not _COMPETITION_ID.fullmatch(competition):
        raise _fail(
            "competition id must be a decimal integer without sign or leading zero", competition
        )
    _check_strict_fields(secure_hash, int(competition))
    return ModelId(namespace, name, commit, secure_hash, int(competition))


def _reference_competition_id(token: str) -> int:
    try:
        return int(token)  # what the reference does: ' 3', '+3', '03', '1_0', '٣' all read
    except ValueError:
        raise _fail("competition id is not an integer as Python's int() reads it", token) from None


def parse_reference_commitment(data: str | bytes) -> ModelId:
    """Parse chain commitment data as the reference's validator does (protocol ``reference-3.1``).

    Fields are split on ':'. With fewer than 5 fields the text is a legacy id of competition
    0 whose fourth field is the secure hash; otherwise the fifth field is read with `int`
    and later fields are ignored. The secure hash is kept as text: one that is no digest
    never matches the files. A repo id may be as long as the 128 bytes allow.

    Raises:
        InvalidCommitment: what the reference also cannot use (no fourth field, an id `int`
            refuses) or what no validator could download: a commit that is not 40 lowercase
            hex (the reference reads ``None`` and branch names too, then fails or follows a
            branch) and repo names outside the Hub's rules.
    """
    parts = _checked_text(data).split(":")
    if len(parts) < 4:
        raise _fail("commitment must have at least 4 ':'-separated fields", ":".join(parts))
    namespace, name, commit, secure_hash = parts[:4]
    competition = 0 if len(parts) < 5 else _reference_competition_id(parts[4])
    return ModelId(namespace, name, commit, secure_hash, competition)


def decode_commitment(data: object, *, rules: CheckRules = NEXT.checks) -> ModelId | Rejection:
    """Parse commitment data by the protocol's rules, but never raise: bad data is a `Rejection`.

    Args:
        data: anything read from chain (text, bytes, hex text, None, ...).
        rules: the protocol's check rules; `rules.commitment` picks the parser.

    Returns:
        The model id, or a rejection whose ``reason`` says what is wrong.
    """
    parse = parse_reference_commitment if rules.commitment == "reference" else parse_commitment
    try:
        return parse(data)  # type: ignore[arg-type]
    except InvalidCommitment as error:
        return Rejection(str(error))
