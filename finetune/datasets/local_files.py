"""Rows from local files: operator overrides in ``data_dir`` and the samples bundled here.

A local file holds rows of the same shape as the remote dataset, so the same shaping
functions apply. JSON Lines and Parquet are read; nothing else (no pickle, no code).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from finetune.errors import DataUnavailable

logger = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).parent / "data"
_SUFFIXES = (".jsonl", ".parquet")


def find_override(data_dir: Path | None, dataset_id: str) -> Path | None:
    """The override file for `dataset_id` in `data_dir` (``.jsonl`` first), if any."""
    if data_dir is None:
        return None
    for suffix in _SUFFIXES:
        candidate = Path(data_dir) / f"{dataset_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def bundled_file(name: str) -> Path:
    """Path of a sample file shipped with the package (e.g. ``mmlu_sample.jsonl``)."""
    return BUNDLED_DIR / name


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of a ``.jsonl`` or ``.parquet`` file as a plain dict.

    Lines of a JSON Lines file that are blank are ignored; lines that are not a JSON object
    are skipped with a logged reason.

    Raises:
        DataUnavailable: The file is missing, unreadable or of an unknown type.
    """
    path = Path(path)
    if not path.is_file():
        raise DataUnavailable(f"data file {path} does not exist", path=str(path))
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.suffix == ".parquet":
        return _read_parquet(path)
    raise DataUnavailable(
        f"data file {path} has an unknown type; use .jsonl or .parquet", path=str(path)
    )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataUnavailable(f"cannot read {path}: {exc}", path=str(path)) from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            logger.warning("%s line %d skipped: not JSON (%s)", path.name, number, exc)
            continue
        if not isinstance(row, dict):
            logger.warning("%s line %d skipped: not a JSON object", path.name, number)
            continue
        rows.append(row)
    return rows


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq  # heavy, and only needed for parquet overrides

    try:
        return pq.read_table(path).to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's errors subclass these
        raise DataUnavailable(f"cannot read parquet {path}: {exc}", path=str(path)) from exc


__all__ = ["BUNDLED_DIR", "bundled_file", "find_override", "read_rows"]
