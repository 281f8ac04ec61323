"""Loaders found by id: `load_task_samples("fineweb", seed=..., count=..., rules=...)`.

A task definition names its loader by id and may pass options (`dataset_options` of the
task); each loader declares the options it accepts with their defaults, and an unknown id or
option is a `ConfigError` that lists what is known. Every id has a loader for salted draws
(`finetune.datasets.loaders`) and, where the reference validator's data is reproduced, one for
reference draws (`finetune.datasets.reference_loaders`); `DataRules.draws` picks one. An id
without reference draws says why in `not_reproduced`.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from finetune.datasets import loaders, reference_loaders
from finetune.datasets.config import DataConfig
from finetune.datasets.samples import Sample
from finetune.errors import ConfigError, DataUnavailable, UnknownIdError
from finetune.protocol import NEXT, DataRules

Sleep = Callable[[float], None]
# (seed, count, resolved options, data config, sleep) -> samples
LoadFn = Callable[[int, int, Mapping[str, Any], DataConfig, Sleep], list[Sample]]

# Why the reference's data is not reproduced for these ids (docs/compatibility.md).
_MACROBENCH = (
    "the reference reads macrocosm-os/macrobench-bittensor-01 through the `datasets` library "
    "(config names from the Hub, random.sample of 10 configs, whole config splits, rows kept "
    "only when their hotkey is a subnet-1 validator's with a permit and 10k stake), and the "
    "loaders are not given those hotkeys"
)
_IF_EVAL = (
    "the reference takes its questions from the first 40 of that same macrobench draw and "
    "picks keywords with NLTK's averaged-perceptron POS tagger, with its own rule texts and "
    "draw order; none of that is reproduced"
)
_NOT_IN_REFERENCE = "the reference validator 3.1.0 has no such data set"


@dataclass(frozen=True)
class LoaderEntry:
    """A registered loader: its id, functions, accepted options with defaults, and a summary.

    Attributes:
        load: The loader of salted draws.
        reference: The loader of reference draws, or None where they are not reproduced.
        not_reproduced: Why there is no `reference` loader.
    """

    id: str
    load: LoadFn
    defaults: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""
    reference: LoadFn | None = None
    not_reproduced: str = ""

    def loader_for(self, rules: DataRules) -> LoadFn:
        """The loader that follows `rules.draws`.

        Raises:
            DataUnavailable: Reference draws of a data set whose reference data this project
                does not reproduce (reason ``not_reproduced``; the message says why).
        """
        if rules.draws == "salted":
            return self.load
        if self.reference is None:
            raise DataUnavailable(
                f"{self.id}: reference draws are not reproduced: {self.not_reproduced}",
                reason="not_reproduced",
                dataset=self.id,
            )
        return self.reference


_REGISTRY: dict[str, LoaderEntry] = {
    entry.id: entry
    for entry in (
        LoaderEntry(
            "synthetic_mmlu",
            loaders.load_synthetic_mmlu,
            loaders.MMLU_DEFAULTS,
            "multiple-choice questions, options A-D in the text",
            not_reproduced=_MACROBENCH,
        ),
        LoaderEntry(
            "synthetic_qa",
            loaders.load_synthetic_qa,
            {"dataset_id": loaders.MMLU_DEFAULTS["dataset_id"]},
            "question/answer pairs scored by reference loss (SN9_MODEL)",
            not_reproduced=_NOT_IN_REFERENCE + " (its DatasetId has no SN9_MODEL task)",
        ),
        LoaderEntry(
            "word_sorting",
            loaders.load_word_sorting,
            {},
            "generated word sorting",
            reference=reference_loaders.load_word_sorting,
        ),
        LoaderEntry(
            "dyck",
            loaders.load_dyck,
            {},
            "generated Dyck-language completion",
            reference=reference_loaders.load_dyck,
        ),
        LoaderEntry(
            "fineweb",
            loaders.load_fineweb,
            loaders.FINEWEB_DEFAULTS,
            "FineWeb-Edu documents",
            reference=reference_loaders.load_fineweb,
        ),
        LoaderEntry(
            "if_eval_v1",
            loaders.load_if_eval_v1,
            loaders.IF_EVAL_DEFAULTS,
            "IF-eval, rule set 1",
            not_reproduced=_IF_EVAL,
        ),
        LoaderEntry(
            "if_eval_v2",
            loaders.load_if_eval_v2,
            loaders.IF_EVAL_DEFAULTS,
            "IF-eval, rule set 2",
            not_reproduced=_IF_EVAL,
        ),
        LoaderEntry(
            "synthetic_1_sft",
            loaders.load_synthetic_1_sft,
            loaders.SYNTHETIC_1_DEFAULTS,
            "SYNTHETIC-1 reasoning traces (math, code output)",
            reference=reference_loaders.load_synthetic_1_sft,
        ),
        LoaderEntry(
            "codeforces_cots",
            loaders.load_codeforces_cots,
            loaders.CODEFORCES_DEFAULTS,
            "Codeforces chain-of-thought solutions",
            reference=reference_loaders.load_codeforces_cots,
        ),
        LoaderEntry(
            "boolq",
            loaders.load_boolq,
            loaders.BOOLQ_DEFAULTS,
            "BoolQ yes/no questions",
            not_reproduced=_NOT_IN_REFERENCE,
        ),
        LoaderEntry(
            "mawps",
            loaders.load_mawps,
            loaders.MAWPS_DEFAULTS,
            "MAWPS arithmetic word problems",
            not_reproduced=_NOT_IN_REFERENCE,
        ),
        LoaderEntry(
            "held_out",
            loaders.load_held_out,
            loaders.HELD_OUT_DEFAULTS,
            "one reference-loss data set of a pool, drawn per round from the seed (hidden-style)",
            not_reproduced=_NOT_IN_REFERENCE,
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
    rules: DataRules = NEXT.data,
    sleep: Sleep = time.sleep,
) -> list[Sample]:
    """Draw up to `count` samples of `dataset` for the round with `seed`.

    The same seed, options, rules and data give the same samples on every machine. Fewer
    samples than `count` are returned when the source has fewer usable rows; the caller
    decides whether that is enough (SYNTHETIC_MMLU needs at least 50).

    Args:
        dataset: Loader id (see `known_datasets()`).
        seed: The round seed. Salted draws salt it with a constant per loader; reference
            draws use it as the reference does (every loader starts from `Random(seed)`).
        count: How many samples to draw (at most; reference draws: SYNTHETIC-1-SFT's target
            size, a cap elsewhere).
        options: Loader options (for example ``dataset_id``, ``max_chars``, ``rows_per_page``).
        config: Data-source settings (offline, local files, endpoint, retries, pins).
        rules: How rows are drawn (`DataRules.draws`); defaults to protocol `next`'s.
        sleep: How to wait between HTTP attempts (tests pass a recorder).

    Returns:
        The samples, records from `finetune.datasets.samples`.

    Raises:
        UnknownIdError: `dataset` is not registered.
        ConfigError: An unknown or ill-typed option, or a negative count.
        DataUnavailable: The data could not be read, or reference draws of it are not
            reproduced (reason ``not_reproduced``); the message says why. Under reference
            draws the reason tells how the reference's load ended: ``rate_limited`` (its
            validator skips the task), ``http_error`` (it aborts the step), other reasons
            (it skips the task).
    """
    entry = loader_entry(dataset)
    if count < 0:
        raise ConfigError(f"count must be >= 0, got {count}", dataset=dataset)
    resolved = resolve_options(entry, options)
    load = entry.loader_for(rules)
    try:
        return load(seed, count, resolved, config, sleep)
    except ImportError as exc:  # a generator module missing from this install
        raise DataUnavailable(f"{dataset}: loader unavailable: {exc}", dataset=dataset) from exc


__all__ = ["LoaderEntry", "known_datasets", "load_task_samples", "loader_entry", "resolve_options"]
