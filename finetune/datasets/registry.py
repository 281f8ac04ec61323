"""Loaders found by id: `load_task_samples("fineweb", seed=..., count=...)`.

A task definition names its loader by id and may pass options (`dataset_options` of the
task); each loader declares the options it accepts with their defaults, and an unknown id or
option is a `ConfigError` that lists what is known.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from finetune.datasets import loaders
from finetune.datasets.config import DataConfig
from finetune.datasets.samples import Sample
from finetune.errors import ConfigError, DataUnavailable, UnknownIdError

LoadFn = Callable[[int, int, Mapping[str, Any], DataConfig], list[Sample]]


@dataclass(frozen=True)
class LoaderEntry:
    """A registered loader: its id, function, accepted options with defaults, and a summary."""

    id: str
    load: LoadFn
    defaults: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""


_REGISTRY: dict[str, LoaderEntry] = {
    entry.id: entry
    for entry in (
        LoaderEntry(
            "synthetic_mmlu",
            loaders.load_synthetic_mmlu,
            loaders.MMLU_DEFAULTS,
            "multiple-choice questions, options A-D in the text",
        ),
        LoaderEntry(
            "synthetic_qa",
            loaders.load_synthetic_qa,
            {"dataset_id": loaders.MMLU_DEFAULTS["dataset_id"]},
            "question/answer pairs scored by reference loss (SN9_MODEL)",
        ),
        LoaderEntry("word_sorting", loaders.load_word_sorting, {}, "generated word sorting"),
        LoaderEntry("dyck", loaders.load_dyck, {}, "generated Dyck-language completion"),
        LoaderEntry(
            "fineweb", loaders.load_fineweb, loaders.FINEWEB_DEFAULTS, "FineWeb-Edu documents"
        ),
        LoaderEntry(
            "if_eval_v1", loaders.load_if_eval_v1, loaders.IF_EVAL_DEFAULTS, "IF-eval, rule set 1"
        ),
        LoaderEntry(
            "if_eval_v2", loaders.load_if_eval_v2, loaders.IF_EVAL_DEFAULTS, "IF-eval, rule set 2"
        ),
        LoaderEntry(
            "synthetic_1_sft",
            loaders.load_synthetic_1_sft,
            loaders.SYNTHETIC_1_DEFAULTS,
            "SYNTHETIC-1 reasoning traces (math, code output)",
        ),
        LoaderEntry(
            "codeforces_cots",
            loaders.load_codeforces_cots,
            loaders.CODEFORCES_DEFAULTS,
            "Codeforces chain-of-thought solutions",
        ),
        LoaderEntry("boolq", loaders.load_boolq, loaders.BOOLQ_DEFAULTS, "BoolQ yes/no questions"),
        LoaderEntry(
            "mawps", loaders.load_mawps, loaders.MAWPS_DEFAULTS, "MAWPS arithmetic word problems"
        ),
    )
}


def known_datasets() -> list[str]:
    """Every registered loader id, sorted."""
    return sorted(_REGISTRY)


def loader_entry(dataset: str) -> LoaderEntry:
    """The registry entry of `dataset`.

    Raises:
        UnknownIdError: `dataset` is not registered; the message lists the known ids and
            suggests the nearest one.
    """
    try:
        return _REGISTRY[dataset]
    except KeyError:
        pass
    nearest = difflib.get_close_matches(dataset, list(_REGISTRY), n=1, cutoff=0.5)
    hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
    raise UnknownIdError(
        f"unknown dataset {dataset!r}.{hint} Known datasets: {', '.join(known_datasets())}",
        dataset=dataset,
    )


def resolve_options(entry: LoaderEntry, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The loader's defaults overlaid with `options`, each checked against the default's type.

    Raises:
        ConfigError: An option the loader does not know, or of the wrong type.
    """
    resolved = dict(entry.defaults)
    for key, value in (options or {}).items():
        if key not in entry.defaults:
            known = ", ".join(sorted(entry.defaults)) or "none"
            raise ConfigError(
                f"dataset {entry.id!r} has no option {key!r}; its options: {known}",
                dataset=entry.id,
            )
        resolved[key] = _coerce(entry.id, key, value, entry.defaults[key])
    return resolved


def _coerce(dataset: str, key: str, value: Any, default: Any) -> Any:
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        raise ConfigError(
            f"dataset {dataset!r} option {key!r} must be {expected.__name__}, got {value!r}",
            dataset=dataset,
        )
    return value


def load_task_samples(
    dataset: str,
    *,
    seed: int,
    count: int,
    options: Mapping[str, Any] | None = None,
    config: DataConfig = DataConfig(),  # noqa: B008 (frozen, so a shared default is safe)
) -> list[Sample]:
    """Draw up to `count` samples of `dataset` for the round with `seed`.

    The same seed, options and data give the same samples on every machine. Fewer samples
    than `count` are returned when the source has fewer usable rows; the caller decides
    whether that is enough (SYNTHETIC_MMLU needs at least 50).

    Args:
        dataset: Loader id (see `known_datasets()`).
        seed: The round seed; each loader salts it with a constant of its own.
        count: How many samples to draw.
        options: Loader options (for example ``dataset_id``, ``max_chars``).
        config: Data-source settings (offline, local files, endpoint, retries, pins).

    Returns:
        The samples, records from `finetune.datasets.samples`.

    Raises:
        UnknownIdError: `dataset` is not registered.
        ConfigError: An unknown or ill-typed option, or a negative count.
        DataUnavailable: The data could not be read; the message says why.
    """
    entry = loader_entry(dataset)
    if count < 0:
        raise ConfigError(f"count must be >= 0, got {count}", dataset=dataset)
    resolved = resolve_options(entry, options)
    try:
        return entry.load(seed, count, resolved, config)
    except ImportError as exc:  # a generator module missing from this install
        raise DataUnavailable(f"{dataset}: loader unavailable: {exc}", dataset=dataset) from exc


__all__ = ["LoaderEntry", "known_datasets", "load_task_samples", "loader_entry", "resolve_options"]
