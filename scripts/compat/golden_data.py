"""Golden data for protocol `reference-3.1`: what the reference validator draws from its datasets.

Runs the reference implementation (macrocosm-os/finetuning 3.1.0 @ afd44037e9a1, imported at
run time from the path given; none of its code is in this repository) against deterministic
fake data sources, for many round seeds and several server layouts per dataset, and writes
what it requested and which samples it built to ``tests/compat/golden/data/<dataset>.json``.
Our tests rebuild the same fake contents (``tests/compat/layouts.py``) and check that our
loaders request the same pages and build byte-identical samples.

How to run (from the repository root; needs the reference's environment, not ours)::

    /work/scratch/ref-venv/bin/python scripts/compat/golden_data.py \\
        --reference /work/scratch/ref/finetuning --nltk-data /work/scratch/nltk_data

Options: ``--out DIR`` (default ``tests/compat/golden/data``), ``--seeds N`` (default 20),
``--only NAME ...`` (datasets: synthetic_1_sft codeforces_cots fineweb synthetic_mmlu
if_eval_v1 if_eval_v2 word_sorting dyck).

The reference environment needs the reference's pins (transformers 4.48.3, datasets 3.3.2,
bittensor 9.0.0, taoverse, nltk, requests). ``--nltk-data`` is a folder laid out like
``nltk_data`` holding ``corpora/words`` (for ``en-basic``) and
``taggers/averaged_perceptron_tagger_eng`` (for IF-eval keywords); the reference also insists
that ``tokenizers/punkt_tab`` exists at import, though data generation never reads it. Without
``--nltk-data`` the word-sorting and IF-eval cases are skipped and listed as such in
``index.json``. Nothing is fetched from the network: the datasets-server is the project's
loopback double (``tests/datasets/fake_datasets_server.py``), the Hub reads of the
macrobench dataset are replaced by in-process stand-ins, ``nltk.download`` is disabled, and
``time.sleep`` in the reference's loader is recorded instead of slept.

Making ``--nltk-data`` offline, from the ``nltk/nltk_data`` repository's package zips
(``packages/corpora/words.zip`` and ``packages/taggers/averaged_perceptron_tagger.zip``)::

    python scripts/compat/golden_data.py --make-nltk-data words.zip \\
        averaged_perceptron_tagger.zip /work/scratch/nltk_data

Output format (one JSON object per dataset, one case per line in ``cases``): see ``FORMAT``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import pickle
import random
import sys
import tempfile
import types
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "tests" / "compat" / "golden" / "data"
REFERENCE_COMMIT = "afd44037e9a116fb1844dea6aaa0718cd23bc248"
TAOVERSE_COMMIT = "e350d5e40a29e50a41c045619172fe544386c3c5"
LATEST_PROMPTING_SAMPLES = 700  # neurons/config.py: --latest_prompting_samples default
SEQUENCE_LENGTH = 4096  # passed to tokenize(); the recording tokenizer ignores it
LONG_STRING = 4096  # strings longer than this are stored as a digest in the golden files
FULL_SEEDS = 4  # cases of the first seeds of each layout list every sample (default) ...
FULL_SEEDS_BY_DATASET = {  # ... or these
    "synthetic_mmlu": 1,
    "fineweb": 2,
    "word_sorting": 2,
    "codeforces_cots": 3,
    "if_eval_v1": 2,
    "synthetic_1_sft": 3,
    "if_eval_v2": 2,
}
FULL_SAMPLES_BYTES = 8_000  # other cases list them all only when that stays this small
HEAD_SAMPLES = 3  # else the first samples, plus the count and digest of all
RNG_TRACE_FULL = 400  # longer traces (and those of other cases) are stored as head + digest

FORMAT = {
    "case": "dataset, seed, layout{name, params}, requests[{path, params}], system, samples, "
    "samples_complete, num_samples, samples_sha256, rng{calls, total, sha256}, notes",
    "requests": "every request the reference made, in order; HTTP ones to the datasets-server "
    "double (path /size or /rows, params in the order sent), Hub ones as the `datasets` "
    "function called (path get_dataset_config_names or load_dataset)",
    "samples": "the reference's samples as its tokenize() saw them: prompt = the user turn, "
    "system = the system turn (same for every sample of a case), reference = the text it "
    "encodes as the expected continuation; MMLU samples carry the answer letter; IF-eval "
    "samples carry both prompts and the rules with their parameters",
    "samples_sha256": "sha256 of json.dumps(all samples, ensure_ascii=False, sort_keys=True, "
    "separators=(',', ':')).encode() before any shortening; when samples_complete is false "
    "only the first samples are listed",
    "long strings": 'a string longer than 4096 characters is stored as {"$long": {"len", '
    '"sha256" (of its UTF-8), "head" (first 120 chars), "tail" (last 60 chars)}}',
    "rng": "calls to the global random module in order: [name, args..., result]; choice and "
    "sample give the population size, shuffle the list length and the shuffled list when "
    "short; sha256 is over json.dumps(all calls, separators=(',', ':')), calls may be a head",
    "notes.error": "the exception the reference's loader raised (type: message), if any; the "
    "validator then skips the task for that round",
    "notes.sleeps": "seconds the reference asked to sleep (retry back-off), in order",
}


# -- loading modules ----------------------------------------------------------------------


def _load_by_path(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _placeholder_nltk_data() -> str:
    """An nltk_data folder with just the empty folders the reference checks for at import."""
    root = tempfile.mkdtemp(prefix="golden-nltk-")
    for sub in ("tokenizers/punkt_tab", "taggers/averaged_perceptron_tagger_eng"):
        os.makedirs(os.path.join(root, sub))
    return root


def _refuse_download(*args: Any, **kwargs: Any) -> bool:
    raise RuntimeError(f"nltk.download{args!r} refused: the golden generator works offline")


def import_reference(reference: Path, nltk_data: Path | None) -> types.SimpleNamespace:
    """Imports the reference's data modules (offline) and returns them."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    no_proxy = os.environ.get("NO_PROXY", "")
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(
        p for p in (no_proxy, "127.0.0.1", "localhost") if p
    )
    import nltk

    nltk.download = _refuse_download
    nltk.data.path.insert(0, str(nltk_data) if nltk_data else _placeholder_nltk_data())
    sys.path.insert(0, str(reference))
    from finetune.datasets.hugging_face import hugging_face_loader, macrocosmos_dataset_loader
    from finetune.eval.if_eval import version

    import constants
    from finetune.datasets import factory, ids

    if constants.__version__ != "3.1.0":
        raise SystemExit(f"expected the reference at 3.1.0, found {constants.__version__}")
    for name in ("bittensor", "taoverse", "finetune", "urllib3", "datasets", "filelock"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return types.SimpleNamespace(
        constants=constants,
        factory=factory,
        ids=ids,
        hfl=hugging_face_loader,
        mdl=macrocosmos_dataset_loader,
        IfEvalVersion=version.IfEvalVersion,
    )


# -- recording ------------------------------------------------------------------------------


def _jsonable(value: Any, depth: int = 0) -> Any:
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, tuple | list) and depth < 3:
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, dict) and depth < 3:
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if hasattr(value, "name") and hasattr(value, "value"):  # enums
        return value.name
    return repr(value)


class RngTrace:
    """Records calls to the global `random` module's drawing functions while active."""

    NAMES = ("seed", "random", "randint", "randrange", "choice", "choices", "sample", "shuffle")

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    @contextlib.contextmanager
    def active(self) -> Iterator[RngTrace]:
        originals = {name: getattr(random, name) for name in self.NAMES}
        try:
            for name, fn in originals.items():
                setattr(random, name, self._wrap(name, fn))
            yield self
        finally:
            for name, fn in originals.items():
                setattr(random, name, fn)

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def traced(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            self.calls.append(self._entry(name, args, kwargs, result))
            return result

        return traced

    @staticmethod
    def _entry(name: str, args: tuple, kwargs: dict, result: Any) -> list[Any]:
        if name == "seed":
            return ["seed", _jsonable(args[0] if args else kwargs.get("a"))]
        if name == "choice":
            return ["choice", len(args[0]), _jsonable(result)]
        if name == "sample":
            population, k = args[0], args[1] if len(args) > 1 else kwargs["k"]
            shown = _jsonable(result) if k <= 25 else None
            return ["sample", len(population), k, shown]
        if name == "shuffle":
            seq = args[0]
            return ["shuffle", len(seq), _jsonable(seq) if len(seq) <= 25 else None]
        return [name, *(_jsonable(a) for a in args), _jsonable(result)]


class RecordingTokenizer:
    """Stands in for a tokenizer: remembers the chats and texts the reference encodes."""

    def __init__(self) -> None:
        self.truncation_side = "right"
        self.chats: list[dict[str, Any]] = []
        self.encoded: list[str] = []

    def apply_chat_template(self, conversation: Any = None, *args: Any, **kwargs: Any) -> Any:
        index = len(self.chats)
        self.chats.append({"messages": conversation, "kwargs": sorted(kwargs)})
        if kwargs.get("tokenize", True) is False:
            return f"\x00chat:{index}\x00"
        return [index]

    def encode(self, text: Any, *args: Any, **kwargs: Any) -> list[int]:
        self.encoded.append(text)
        return [len(self.encoded) - 1]


def _digest(obj: Any, **dump_kwargs: Any) -> str:
    data = json.dumps(obj, ensure_ascii=False, **dump_kwargs).encode()
    return hashlib.sha256(data).hexdigest()


def _shorten_strings(obj: Any) -> Any:
    if isinstance(obj, str) and len(obj) > LONG_STRING:
        return {
            "$long": {
                "len": len(obj),
                "sha256": hashlib.sha256(obj.encode()).hexdigest(),
                "head": obj[:120],
                "tail": obj[-60:],
            }
        }
    if isinstance(obj, list):
        return [_shorten_strings(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _shorten_strings(v) for k, v in obj.items()}
    return obj


def _samples_fields(samples: list[Any], full: bool) -> dict[str, Any]:
    canonical = dict(sort_keys=True, separators=(",", ":"))
    shortened = _shorten_strings(samples)
    complete = full or len(json.dumps(shortened, ensure_ascii=False)) <= FULL_SAMPLES_BYTES
    return {
        "num_samples": len(samples),
        "samples_sha256": _digest(samples, **canonical),
        "samples_complete": complete,
        "samples": shortened if complete else shortened[:HEAD_SAMPLES],
    }


def _rng_fields(trace: RngTrace, full: bool) -> dict[str, Any]:
    calls = trace.calls
    if not full:
        shown = calls[:20]
    else:
        shown = calls if len(calls) <= RNG_TRACE_FULL else calls[:100]
    return {"total": len(calls), "sha256": _digest(calls, separators=(",", ":")), "calls": shown}


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- running the reference -----------------------------------------------------------------


class Runner:
    def __init__(self, ref: types.SimpleNamespace, fake_server: type, layouts: Any) -> None:
        self.ref = ref
        self.FakeDatasetsServer = fake_server
        self.layouts = layouts
        self.full_seeds: set[int] = set()  # cases of these seeds list every sample

    # The eval task of the schedule that uses `dataset_id` (its dataset_kwargs).
    def task_kwargs(self, dataset_id: Any) -> dict[str, Any]:
        for _, competitions in self.ref.constants.COMPETITION_SCHEDULE_BY_BLOCK:
            for competition in competitions:
                for task in competition.eval_tasks:
                    if task.dataset_id == dataset_id:
                        return dict(task.dataset_kwargs or {})
        return {}

    @contextlib.contextmanager
    def _server(self, layout: Any) -> Iterator[Any]:
        server = self.FakeDatasetsServer(
            layout.datasets, rate_limit_offsets=dict(layout.rate_limit_offsets)
        )
        queued = 0
        for index, status, retry_after in sorted(layout.faults):
            if index > queued:
                server.pass_next(times=index - queued)
            server.fail_next(status, retry_after=retry_after)
            queued = index + 1
        hfl = self.ref.hfl
        saved = (hfl.HuggingFaceLoader.rows_base_url, hfl.HuggingFaceLoader.size_base_url)
        with server:
            hfl.HuggingFaceLoader.rows_base_url = f"{server.url}/rows"
            hfl.HuggingFaceLoader.size_base_url = f"{server.url}/size"
            try:
                yield server
            finally:
                hfl.HuggingFaceLoader.rows_base_url, hfl.HuggingFaceLoader.size_base_url = saved

    @contextlib.contextmanager
    def _sleeps(self) -> Iterator[list[float]]:
        sleeps: list[float] = []
        hfl = self.ref.hfl
        real_time = hfl.time
        hfl.time = types.SimpleNamespace(sleep=sleeps.append, time=real_time.time)
        try:
            yield sleeps
        finally:
            hfl.time = real_time

    @contextlib.contextmanager
    def _hub(self, layout: Any, calls: list[dict[str, Any]]) -> Iterator[None]:
        mdl = self.ref.mdl
        hub = layout.hub

        def get_dataset_config_names(path: str, *args: Any, **kwargs: Any) -> list[str]:
            calls.append({"path": "get_dataset_config_names", "params": {"path": path}})
            return list(hub.configs) if hub else []

        def load_dataset(
            path: str, name: str | None = None, split: str | None = None, **kwargs: Any
        ) -> list[dict[str, Any]]:
            params = {"path": path, "name": name, "split": split, **kwargs}
            calls.append({"path": "load_dataset", "params": params})
            if hub is None or name in hub.failing or name not in hub.rows:
                raise FileNotFoundError(f"config {name} could not be loaded")
            return [dict(row) for row in hub.rows[name]]

        saved = (mdl.get_dataset_config_names, mdl.load_dataset)
        mdl.get_dataset_config_names, mdl.load_dataset = get_dataset_config_names, load_dataset
        try:
            yield
        finally:
            mdl.get_dataset_config_names, mdl.load_dataset = saved

    def _run(self, build: Callable[[], Any], layout: Any) -> dict[str, Any]:
        """Builds a loader under the fake sources with tracing; returns the raw results."""
        trace = RngTrace()
        hub_calls: list[dict[str, Any]] = []
        loader, error = None, None
        quiet = io.StringIO()
        with (
            self._server(layout) as server,
            self._sleeps() as sleeps,
            self._hub(layout, hub_calls),
            contextlib.redirect_stdout(quiet),
            contextlib.redirect_stderr(quiet),
        ):
            with trace.active():
                try:
                    loader = build()
                except Exception as exc:  # the validator catches these and skips the task
                    error = _error(exc)
            requests = [{"path": path, "params": dict(query)} for path, query in server.requests]
        return {
            "loader": loader,
            "error": error,
            "requests": requests + hub_calls,
            "sleeps": list(sleeps),
            "trace": trace,
        }

    # -- per dataset -----------------------------------------------------------------------

    def case_remote(self, dataset: str, layout_name: str, seed: int) -> dict[str, Any]:
        params = self.layouts.LAYOUTS[layout_name]
        layout = self.layouts.build(params)
        DatasetId = self.ref.ids.DatasetId
        dataset_id = {
            "synthetic_1_sft": DatasetId.SYNTHETIC_1_SFT,
            "codeforces_cots": DatasetId.CODEFORCES_COTS,
            "fineweb": DatasetId.FINEWEB,
        }[dataset]
        kwargs = self.task_kwargs(dataset_id)
        hotkeys = set(layout.validator_hotkeys)
        run = self._run(
            lambda: self.ref.factory.DatasetLoaderFactory.get_loader(
                dataset_id=dataset_id, dataset_kwargs=kwargs, seed=seed, validator_hotkeys=hotkeys
            ),
            layout,
        )
        loader = run["loader"]
        notes: dict[str, Any] = {"dataset_kwargs": _jsonable(kwargs), "sleeps": run["sleeps"]}
        samples: list[Any] = []
        system = None
        if loader is not None:
            notes["pages"] = loader.get_page_names()
            tokenizer = RecordingTokenizer()
            try:
                tokenized = loader.tokenize(tokenizer, SEQUENCE_LENGTH)
            except Exception as exc:
                notes["tokenize_error"] = _error(exc)
                tokenized = []
            if dataset == "fineweb":
                samples = [{"text": text} for text in tokenizer.encoded]
            else:
                samples, system = self._reference_samples(tokenizer, len(tokenized))
                if dataset == "synthetic_1_sft":
                    kept = [t for t in loader.task_types if t in loader.supported_task_types]
                    for sample, task_type in zip(samples, kept, strict=True):
                        sample["task_type"] = task_type
        if run["error"]:
            notes["error"] = run["error"]
        return self._case(dataset, seed, layout_name, params, run, samples, system, notes)

    @staticmethod
    def _reference_samples(
        tokenizer: RecordingTokenizer, count: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """(prompt, reference) pairs from a reasoning loader's tokenize() calls."""
        systems = set()
        samples = []
        # Each sample: one chat (not tokenized), then encode(chat marker), encode(reference).
        for i in range(count):
            messages = tokenizer.chats[i]["messages"]
            context, reference = tokenizer.encoded[2 * i], tokenizer.encoded[2 * i + 1]
            if context != f"\x00chat:{i}\x00":
                raise RuntimeError("unexpected tokenize() call order")
            roles = [m["role"] for m in messages]
            if roles != ["system", "user"]:
                raise RuntimeError(f"unexpected chat roles {roles}")
            systems.add(messages[0]["content"])
            samples.append({"prompt": messages[1]["content"], "reference": reference})
        if len(systems) > 1:
            raise RuntimeError("system prompt varies between samples")
        return samples, next(iter(systems), None)

    def case_mmlu(self, layout_name: str, seed: int) -> dict[str, Any]:
        params = self.layouts.LAYOUTS[layout_name]
        layout = self.layouts.build(params)
        hotkeys = set(layout.validator_hotkeys)
        run = self._run(
            lambda: self.ref.mdl.MacrocosmosDatasetLoader(
                random_seed=seed, max_samples=LATEST_PROMPTING_SAMPLES, validator_hotkeys=hotkeys
            ),
            layout,
        )
        loader = run["loader"]
        notes: dict[str, Any] = {"max_samples": LATEST_PROMPTING_SAMPLES}
        samples: list[Any] = []
        if loader is not None:
            tokenizer = RecordingTokenizer()
            loader.tokenize(tokenizer, SEQUENCE_LENGTH)
            for chat, (challenge, reference) in zip(tokenizer.chats, loader.buffer, strict=True):
                messages = chat["messages"]
                if messages != [{"role": "user", "content": challenge}]:
                    raise RuntimeError("unexpected MMLU chat")
                samples.append({"prompt": challenge, "answer": reference})
            notes["config_statistics"] = dict(loader.get_config_statistics())
            notes["validator_skips_task"] = len(loader) < self.ref.constants.MIN_ALLOWED_SAMPLES
        if run["error"]:
            notes["error"] = run["error"]
        return self._case("synthetic_mmlu", seed, layout_name, params, run, samples, None, notes)

    def case_if_eval(self, version: int, layout_name: str, seed: int) -> dict[str, Any]:
        params = self.layouts.LAYOUTS[layout_name]
        layout = self.layouts.build(params)
        hotkeys = set(layout.validator_hotkeys)
        if_eval_version = self.ref.IfEvalVersion(version)
        kwargs = {"if_eval_version": if_eval_version}
        DatasetId = self.ref.ids.DatasetId
        run = self._run(
            lambda: self.ref.factory.DatasetLoaderFactory.get_loader(
                dataset_id=DatasetId.SYNTHETIC_IF_EVAL,
                dataset_kwargs=kwargs,
                seed=seed,
                validator_hotkeys=hotkeys,
            ),
            layout,
        )
        loader = run["loader"]
        notes: dict[str, Any] = {"dataset_kwargs": {"if_eval_version": if_eval_version.name}}
        samples: list[Any] = []
        if loader is not None:
            tokenizer = RecordingTokenizer()
            loader.tokenize(tokenizer, SEQUENCE_LENGTH)
            for i, sample in enumerate(loader.buffer):
                chats = tokenizer.chats[2 * i : 2 * i + 2]
                expected = [
                    [{"role": "user", "content": p}] for p in (sample.prompt_1, sample.prompt_2)
                ]
                if [c["messages"] for c in chats] != expected:
                    raise RuntimeError("unexpected IF-eval chats")
                samples.append(
                    {
                        "prompt_1": sample.prompt_1,
                        "prompt_2": sample.prompt_2,
                        "rules": [self._rule(rule) for rule in sample.rules],
                    }
                )
        if run["error"]:
            notes["error"] = run["error"]
        name = f"if_eval_v{version}"
        return self._case(name, seed, layout_name, params, run, samples, None, notes)

    @staticmethod
    def _rule(rule: Any) -> dict[str, Any]:
        fields = {k: _jsonable(v) for k, v in sorted(vars(rule).items()) if k != "rule_id"}
        return {
            "rule_id": int(rule.rule_id),
            "name": rule.rule_id.name,
            "params": fields,
            "prompts": [rule.get_prompt(0), rule.get_prompt(1)],
        }

    def case_generated(self, dataset: str, seed: int) -> dict[str, Any]:
        DatasetId = self.ref.ids.DatasetId
        dataset_id = {"word_sorting": DatasetId.WORD_SORTING, "dyck": DatasetId.DYCK_LANGUAGE}[
            dataset
        ]
        kwargs = self.task_kwargs(dataset_id)
        params = {"kind": "generated", "dataset_kwargs": kwargs}
        layout = self.layouts.Layout(params=params)
        run = self._run(
            lambda: self.ref.factory.DatasetLoaderFactory.get_loader(
                dataset_id=dataset_id, dataset_kwargs=kwargs, seed=seed, validator_hotkeys=set()
            ),
            layout,
        )
        loader = run["loader"]
        samples: list[Any] = []
        notes: dict[str, Any] = {"dataset_kwargs": _jsonable(kwargs)}
        if loader is not None:
            tokenizer = RecordingTokenizer()
            loader.tokenize(tokenizer, SEQUENCE_LENGTH)
            for chat, reference, (challenge, buffered) in zip(
                tokenizer.chats, tokenizer.encoded, loader.buffer, strict=True
            ):
                if chat["messages"] != [{"role": "user", "content": challenge}]:
                    raise RuntimeError("unexpected chat")
                if reference != buffered:
                    raise RuntimeError("unexpected reference")
                samples.append({"prompt": challenge, "reference": reference})
            if dataset == "word_sorting":
                notes["word_pool_size"] = len(loader.words)
                notes["word_pool_sha256"] = _digest(loader.words, separators=(",", ":"))
        if run["error"]:
            notes["error"] = run["error"]
        return self._case(dataset, seed, "generated", params, run, samples, None, notes)

    def _case(
        self,
        dataset: str,
        seed: int,
        layout_name: str,
        params: Mapping[str, Any],
        run: Mapping[str, Any],
        samples: list[Any],
        system: str | None,
        notes: dict[str, Any],
    ) -> dict[str, Any]:
        case: dict[str, Any] = {
            "dataset": dataset,
            "seed": seed,
            "layout": {"name": layout_name, "params": params},
            "requests": run["requests"],
            "system": system,
        }
        full = seed in self.full_seeds
        case.update(_samples_fields(samples, full=full))
        case["rng"] = _rng_fields(run["trace"], full=full)
        case["notes"] = notes
        return case


# -- main ----------------------------------------------------------------------------------

REMOTE_LAYOUTS = {
    "synthetic_1_sft": [
        "sft_small",
        "sft_medium",
        "sft_sparse",
        "sft_two_configs",
        "sft_flaky",
        "sft_starved",
        "sft_too_small",
    ],
    "codeforces_cots": ["cf_configs", "cf_two_splits", "cf_single", "cf_small_config"],
    "fineweb": ["fw_dumps", "fw_single_default", "fw_duplicates", "fw_rate_limited"],
}
HUB_LAYOUTS = ["mb_few", "mb_many", "mb_scarce", "mb_no_hotkey_filter"]
ALL_DATASETS = [
    *REMOTE_LAYOUTS,
    "synthetic_mmlu",
    "if_eval_v1",
    "if_eval_v2",
    "word_sorting",
    "dyck",
]
NEEDS_NLTK = {"if_eval_v1", "if_eval_v2", "word_sorting"}


def round_seeds(count: int) -> list[int]:
    """Seeds shaped like the validator's: int(sha256(text), 16), 256-bit."""
    return [int(hashlib.sha256(f"golden-seed-{i}".encode()).hexdigest(), 16) for i in range(count)]


def generate(runner: Runner, dataset: str, seeds: Sequence[int]) -> list[dict[str, Any]]:
    runner.full_seeds = set(seeds[: FULL_SEEDS_BY_DATASET.get(dataset, FULL_SEEDS)])
    cases = []
    if dataset in REMOTE_LAYOUTS:
        for name in REMOTE_LAYOUTS[dataset]:
            cases += [runner.case_remote(dataset, name, seed) for seed in seeds]
    elif dataset == "synthetic_mmlu":
        for name in HUB_LAYOUTS:
            cases += [runner.case_mmlu(name, seed) for seed in seeds]
    elif dataset.startswith("if_eval_v"):
        version = int(dataset[-1])
        # V1 is in no schedule of the reference: three layouts are enough for it.
        for name in HUB_LAYOUTS if version == 2 else HUB_LAYOUTS[:3]:
            cases += [runner.case_if_eval(version, name, seed) for seed in seeds]
    else:
        cases += [runner.case_generated(dataset, seed) for seed in seeds]
    return cases


def write(path: Path, dataset: str, cases: list[dict[str, Any]]) -> None:
    head = {
        "dataset": dataset,
        "reference": {"finetuning": REFERENCE_COMMIT, "taoverse": TAOVERSE_COMMIT},
        "generator": "scripts/compat/golden_data.py",
        "format": FORMAT,
    }
    lines = ["{", *(f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}," for k, v in head.items())]
    lines.append('"cases": [')
    body = [json.dumps(case, ensure_ascii=False) for case in cases]
    lines.append(",\n".join(body))
    lines.append("]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


EN_BASIC_SHA256 = "b00de5c6438714a6abaa906ec85f063f63c0606f713cbe8728b21c42664e5fce"


class _SetOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data (dicts, lists, tuples, strings, numbers, sets) and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("__builtin__", "set"), ("builtins", "set")):
            return set
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def make_nltk_data(words_zip: Path, tagger_zip: Path, out: Path) -> None:
    """Lays out the NLTK data the reference needs, from nltk_data's package zips.

    `words_zip` is ``packages/corpora/words.zip``; `tagger_zip` is
    ``packages/taggers/averaged_perceptron_tagger.zip`` (the pickled model, of which
    ``averaged_perceptron_tagger_eng`` is the JSON export that NLTK >= 3.9 loads: the
    weights, tag dictionary and class list are written as its three JSON files).
    """
    with zipfile.ZipFile(words_zip) as archive:
        archive.extractall(out / "corpora")
    en_basic = (out / "corpora" / "words" / "en-basic").read_bytes()
    if hashlib.sha256(en_basic).hexdigest() != EN_BASIC_SHA256:
        raise SystemExit("words.zip holds a different en-basic than the one NLTK ships")
    with zipfile.ZipFile(tagger_zip) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".pickle"))
        weights, tagdict, classes = _SetOnlyUnpickler(
            io.BytesIO(archive.read(name)), encoding="latin1"
        ).load()
    folder = out / "taggers" / "averaged_perceptron_tagger_eng"
    folder.mkdir(parents=True, exist_ok=True)
    for part, obj in (("weights", weights), ("tagdict", tagdict), ("classes", sorted(classes))):
        with open(folder / f"averaged_perceptron_tagger_eng.{part}.json", "w") as handle:
            json.dump(obj, handle)
    (out / "tokenizers" / "punkt_tab").mkdir(parents=True, exist_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--make-nltk-data",
        nargs=3,
        type=Path,
        default=None,
        metavar=("WORDS_ZIP", "TAGGER_ZIP", "OUT"),
        help="lay out OUT as --nltk-data from nltk_data's package zips, then exit",
    )
    parser.add_argument("--reference", type=Path, help="finetuning checkout")
    parser.add_argument("--nltk-data", type=Path, default=None, help="nltk_data folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--only", nargs="*", choices=ALL_DATASETS, default=None)
    args = parser.parse_args(argv)
    if args.make_nltk_data:
        make_nltk_data(*args.make_nltk_data)
        return 0
    if args.reference is None:
        parser.error("--reference is required")

    ref = import_reference(args.reference.resolve(), args.nltk_data)
    fake = _load_by_path("_golden_fake_server", REPO / "tests/datasets/fake_datasets_server.py")
    layouts = _load_by_path("_golden_layouts", REPO / "tests/compat/layouts.py")
    runner = Runner(ref, fake.FakeDatasetsServer, layouts)
    have_nltk = args.nltk_data is not None
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = round_seeds(args.seeds)
    index: dict[str, Any] = {"seeds": len(seeds), "datasets": {}, "skipped": {}}
    for dataset in args.only or ALL_DATASETS:
        if dataset in NEEDS_NLTK and not have_nltk:
            index["skipped"][dataset] = (
                "needs NLTK data (corpora/words en-basic; IF-eval: the perceptron tagger)"
            )
            print(f"{dataset}: skipped (no --nltk-data)", file=sys.stderr)
            continue
        cases = generate(runner, dataset, seeds)
        write(args.out / f"{dataset}.json", dataset, cases)
        errors = sum(1 for c in cases if "error" in c["notes"])
        index["datasets"][dataset] = {"cases": len(cases), "with_error": errors}
        print(f"{dataset}: {len(cases)} cases ({errors} where the loader raised)", file=sys.stderr)
    if args.only is None:
        (args.out / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
