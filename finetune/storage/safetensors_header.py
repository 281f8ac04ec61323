"""Read and validate safetensors headers without loading any weights.

Layout: 8-byte little-endian header length N, N bytes of JSON
`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the data
buffer. A well-formed file has every tensor's byte span equal to `prod(shape) * itemsize`, spans
that tile the buffer with no gap or overlap, and a buffer that ends exactly at the end of the
file. A header that lies about any of these is `corrupt_safetensors`.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from finetune.errors import ModelRejected

# Ours (a safety limit in every protocol): the safetensors library accepts 100 MB headers, but
# a dense model of the sizes this subnet scores needs a few hundred tensors, ~100 bytes each.
# Parsing a 100 MB header costs ~1 GB of Python objects; 240k tiny tensors in one 25 MB shard
# cost a validator 86 s of CPU. A real shard needs neither.
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_TENSORS_PER_SHARD = 10_000

DTYPE_BYTES: Mapping[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8, "C64": 8,
}  # fmt: skip


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def parameter_count(self) -> int:
        return math.prod(self.shape)


def _corrupt(path: object, why: str) -> ModelRejected:
    return ModelRejected(f"corrupt safetensors file {path}: {why}", reason="corrupt_safetensors")


def _too_many(path: object, count: int) -> ModelRejected:
    return ModelRejected(
        f"{path} holds {count:,} tensors, over the {MAX_TENSORS_PER_SHARD:,} a shard may hold",
        reason="too_many_tensors",
        tensors=count,
    )


@dataclass(frozen=True)
class SafetensorsLayout:
    """A validated safetensors file: its tensors and where their bytes start in the file."""

    entries: list[TensorEntry]
    data_start: int  # file offset of byte 0 of the data buffer (8 + header length)


def _entry(name: str, raw: object, where: object) -> TensorEntry:
    if not isinstance(raw, dict):
        raise _corrupt(where, f"tensor {name!r} is not an object")
    dtype, shape, offsets = raw.get("dtype"), raw.get("shape"), raw.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise _corrupt(where, f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _corrupt(where, f"tensor {name!r} has a bad shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise _corrupt(where, f"tensor {name!r} has bad data offsets {offsets!r}")
    entry = TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1])
    if entry.end - entry.begin != entry.parameter_count * DTYPE_BYTES[dtype]:
        raise _corrupt(
            where,
            f"tensor {name!r} spans {entry.end - entry.begin} bytes but {dtype}{list(shape)} "
            f"needs {entry.parameter_count * DTYPE_BYTES[dtype]}",
        )
    return entry


def parse_header(header: bytes, *, where: object = "<header>") -> list[TensorEntry]:
    """Parse the JSON header of a safetensors file (the N bytes after the length prefix).

    Returns:
        The tensors, in file order (sorted by begin offset).

    Raises:
        ModelRejected: reason `corrupt_safetensors`.
    """
    try:
        data = json.loads(header.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad utf-8/JSON, huge ints, deep nesting
        raise _corrupt(where, f"header is not JSON ({str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise _corrupt(where, "header is not a JSON object")
    tensors = len(data) - ("__metadata__" in data)
    if tensors > MAX_TENSORS_PER_SHARD:
        raise _too_many(where, tensors)
    metadata = data.pop("__metadata__", None)
    # The safetensors library refuses anything but a str -> str map; so must we.
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise _corrupt(where, "__metadata__ is not a map of strings")
    entries = [_entry(name, raw, where) for name, raw in data.items()]
    return sorted(entries, key=lambda e: (e.begin, e.end))


def read_header(path: str | Path) -> list[TensorEntry]:
    """Read and fully validate one safetensors file's header against the file's size.

    Returns:
        The tensors, in file order.

    Raises:
        ModelRejected: reason `corrupt_safetensors` (short file, bad JSON, lying offsets,
            gaps, overlaps, or trailing bytes) or `too_many_tensors`.
    """
    return read_layout(path).entries


def read_layout(path: str | Path) -> SafetensorsLayout:
    """`read_header`, plus the file offset where the tensors' bytes begin.

    Raises:
        ModelRejected: as `read_header`.
    """
    file = Path(path)
    size = file.stat().st_size
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise _corrupt(file.name, "shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", prefix)
        if 8 + length > size:
            raise _corrupt(file.name, f"header length {length} does not fit a {size}-byte file")
        if length > MAX_HEADER_BYTES:
            raise ModelRejected(
                f"{file.name}: a {length:,}-byte header is over the {MAX_HEADER_BYTES:,}-byte limit",
                reason="too_many_tensors",
            )
        header = handle.read(length)
    entries = parse_header(header, where=file.name)
    data_bytes = size - 8 - length
    position = 0
    for entry in entries:  # spans must tile [0, data_bytes) exactly
        if entry.begin != position:
            raise _corrupt(
                file.name, f"tensor {entry.name!r} starts at {entry.begin}, expected {position}"
            )
        position = entry.end
    if position != data_bytes:
        raise _corrupt(file.name, f"tensors cover {position} bytes but the file holds {data_bytes}")
    return SafetensorsLayout(entries=entries, data_start=8 + length)


__all__ = [
    "DTYPE_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_TENSORS_PER_SHARD",
    "SafetensorsLayout",
    "TensorEntry",
    "parse_header",
    "read_header",
    "read_layout",
]
