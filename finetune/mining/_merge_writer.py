"""A streaming safetensors writer: tensors go to disk one at a time, in a planned order.

The merge knows every output name, dtype and shape before it computes anything, so the
headers (and the shard split) are fixed up front and each merged tensor is written and freed
at once. Memory stays at one output tensor instead of a whole shard.

File format (safetensors): 8-byte little-endian header length, a JSON header mapping each
name to {dtype, shape, data_offsets=[start, end)} relative to the data section, then the data
with no holes. The header is padded with spaces to a multiple of 8 bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from finetune.mining._merge_io import INDEX_FILE, ITEMSIZE, SINGLE_FILE

TORCH_DTYPE_CODES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}  # fmt: skip


@dataclass(frozen=True)
class OutputTensor:
    name: str
    dtype: str  # safetensors dtype code
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = ITEMSIZE[self.dtype]
        for d in self.shape:
            n *= d
        return n


def plan_shards(tensors: Sequence[OutputTensor], max_shard_bytes: int) -> list[list[OutputTensor]]:
    """Order tensors (largest itemsize first, then by name) and cut them into shards.

    Larger itemsizes first keep every offset aligned to its dtype within a shard, since each
    earlier block is a multiple of a larger power-of-two itemsize. A tensor larger than the
    limit gets a shard of its own.
    """
    ordered = sorted(tensors, key=lambda t: (-ITEMSIZE[t.dtype], t.name))
    shards: list[list[OutputTensor]] = [[]]
    size = 0
    for tensor in ordered:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards if shards[0] else []


def _header_bytes(entries: Sequence[OutputTensor]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for e in entries:
        header[e.name] = {
            "dtype": e.dtype,
            "shape": list(e.shape),
            "data_offsets": [offset, offset + e.nbytes],
        }
        offset += e.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


class ShardedWriter:
    """Writes the planned tensors in `order`; call `write` once per tensor, then `finish`."""

    def __init__(
        self, out_dir: Path, tensors: Sequence[OutputTensor], max_shard_bytes: int
    ) -> None:
        self.out_dir = out_dir
        self.shards = plan_shards(tensors, max_shard_bytes)
        n = len(self.shards)
        self.file_names = (
            [SINGLE_FILE]
            if n == 1
            else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        )
        self.order = [t for shard in self.shards for t in shard]
        self._shard_of = [i for i, shard in enumerate(self.shards) for _ in shard]
        self._next = 0
        self._shard = -1
        self._file: BinaryIO | None = None
        self.bytes_written = 0

    def _open_shard(self, index: int) -> None:
        self._close()
        self._shard = index
        self._file = (self.out_dir / self.file_names[index]).open("wb")
        header = _header_bytes(self.shards[index])
        self._file.write(header)
        self.bytes_written += len(header)

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, tensor: torch.Tensor) -> None:
        """Write the next planned tensor (`order[i]`); its dtype and shape must match the plan."""
        expected = self.order[self._next]
        code = TORCH_DTYPE_CODES.get(tensor.dtype)
        if code != expected.dtype or tuple(tensor.shape) != expected.shape:
            raise ValueError(
                f"{expected.name}: planned {expected.dtype} {list(expected.shape)}, "
                f"got {tensor.dtype} {list(tensor.shape)}"
            )
        if self._shard_of[self._next] != self._shard:
            self._open_shard(self._shard_of[self._next])
        flat = tensor.detach().contiguous().reshape(-1).view(torch.uint8)  # raw little-endian bytes
        assert self._file is not None
        self._file.write(flat.numpy().data)
        self.bytes_written += expected.nbytes
        self._next += 1

    def finish(self) -> list[str]:
        """Close the last shard, write the index when sharded; return the files written."""
        self._close()
        if self._next != len(self.order):
            raise ValueError(f"only {self._next} of {len(self.order)} planned tensors were written")
        files = list(self.file_names) if self.shards else []
        if len(self.shards) > 1:
            weight_map = {
                t.name: self.file_names[i] for i, shard in enumerate(self.shards) for t in shard
            }
            total = sum(t.nbytes for t in self.order)
            index = {
                "metadata": {"total_size": total},
                "weight_map": dict(sorted(weight_map.items())),
            }
            (self.out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
            files.append(INDEX_FILE)
        return files
