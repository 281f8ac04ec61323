"""Measure the batched engine against its baselines on the eval methods' real requests.

A workload is what one eval method asks of an engine: its requests are built from task
samples by the method's own build functions, through the model's tokenizer and chat
template, exactly as an evaluation does (one engine call per task). The same calls go to
every engine: `BatchedEngine`, `NaiveEngine` (one sample per forward, full logits: how the
reference subnet scores, and the reference answers) and, where it is installed,
lm-evaluation-harness's Hugging Face backend (`_lm_eval_engine`). Their answers must agree;
the report gives time, tokens/s, peak memory, speedups, and the utilisation of the machine's
measured matmul peak (`_bench_limits`).

Each engine is warmed up on a few requests first (the first call pays one-off costs: the
split-head and shared-prefix probes, allocator growth, kernel selection); timings are the best
of `repeats` runs. Peak memory is the peak above the level at entry: on CUDA from
`torch.cuda.max_memory_allocated`, on CPU from the process's peak RSS (reset through
/proc/self/clear_refs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from finetune.competition import EvalTaskSpec
from finetune.datasets import DataConfig, load_task_samples
from finetune.eval._bench_limits import ModelShape, call_flops
from finetune.eval.methods import if_eval, multiple_choice, reference_loss, text_loss
from finetune.eval.prompting import PromptContext, Tokenizer, stop_ids_of
from finetune.eval.requests import ChoiceRequest, Engine, LossRequest

RUN = {"loss": "loss", "choice": "choice_logprobs", "generate": "generate"}
REFERENCE_DATASETS = ("synthetic_1_sft", "codeforces_cots", "word_sorting")


@dataclass(frozen=True)
class Call:
    """One engine call: a request kind (``loss``, ``choice``, ``generate``) and its requests."""

    kind: str
    requests: tuple


@dataclass(frozen=True)
class Workload:
    """The engine calls of one eval method, in the order an evaluation makes them."""

    calls: tuple[Call, ...]

    @property
    def samples(self) -> int:
        return sum(len(c.requests) for c in self.calls)


# ---- requests ------------------------------------------------------------------------------


class IdMap:
    """Token ids of the tokenizer mapped into a model's vocabulary.

    A model with a larger vocabulary than the tokenizer (a random-weight stand-in for a real
    model) gets the ids spread over its vocabulary by an affine map (97 is prime, so it is
    one-to-one whenever 97 does not divide the vocabulary size); a smaller one gets them
    wrapped.
    """

    def __init__(self, tokenizer_size: int, vocab: int) -> None:
        self.spread = vocab > tokenizer_size
        self.vocab = vocab

    def __call__(self, ids: Sequence[int]) -> tuple[int, ...]:
        if self.spread:
            return tuple((i * 97 + 11) % self.vocab for i in ids)
        return tuple(i % self.vocab for i in ids)

    def request(self, r: Any) -> Any:
        if isinstance(r, LossRequest):
            return LossRequest(self(r.token_ids), r.score_from)
        if isinstance(r, ChoiceRequest):
            return ChoiceRequest(self(r.prompt_ids), self(r.choice_ids))
        return replace(r, prompt_ids=self(r.prompt_ids), stop_ids=self(r.stop_ids),
                       suppress_ids=self(r.suppress_ids))


def cap_generation(workloads: Mapping[str, Workload], max_new_tokens: int) -> dict[str, Workload]:
    """`workloads` with every generation request stopped after at most `max_new_tokens` (a
    smaller benchmark: tests; the answers still have to agree)."""

    def cap(c: Call) -> Call:
        if c.kind != "generate":
            return c
        return Call(c.kind, tuple(
            replace(r, max_new_tokens=min(r.max_new_tokens, max_new_tokens)) for r in c.requests
        ))

    return {name: Workload(tuple(cap(c) for c in w.calls)) for name, w in workloads.items()}


def build_workloads(
    tokenizer: Tokenizer,
    vocab: int,
    specs: Mapping[str, EvalTaskSpec],
    *,
    samples: int,
    sequence_length: int,
    seed: int = 0,
    data: DataConfig | None = None,
) -> dict[str, Workload]:
    """The requests of each benchmarked method, from the bundled task samples.

    Args:
        tokenizer: the model's tokenizer (its chat template shapes every prompt).
        vocab: the model's vocabulary size; ids are mapped into it (see `IdMap`).
        specs: task definitions by dataset id, for their generation settings:
            ``synthetic_mmlu``, ``if_eval_v2`` and ``fineweb`` (the degeneracy gate).
        samples: samples per task (IF-eval takes half: two questions each).
        sequence_length: the competition sequence length the requests are cut to.
        seed: round seed of the sample draw.
        data: data-source settings; offline (bundled samples) by default.

    Returns:
        ``multiple_choice``, ``multiple_choice_loglik``, ``reference_loss``, ``text_loss``
        and ``if_eval`` workloads. Reference loss makes one call per reference task
        (SYNTHETIC_1_SFT, CODEFORCES_COTS, WORD_SORTING); text loss makes the gate's
        generation call, then the loss call.
    """
    data = data or DataConfig(offline=True)
    ctx = PromptContext(tokenizer, sequence_length, stop_ids_of(tokenizer))
    mapping = IdMap(len(tokenizer), vocab)

    def load(dataset: str, count: int = samples) -> list:
        return load_task_samples(dataset, seed=seed, count=count, config=data)

    def call(kind: str, requests: Sequence[Any]) -> Call:
        return Call(kind, tuple(mapping.request(r) for r in requests))

    mmlu = load("synthetic_mmlu")
    gate = specs["fineweb"].generation or text_loss.GATE_GENERATION
    return {
        "multiple_choice": Workload(
            (
                call(
                    "generate",
                    multiple_choice.build_generation_requests(mmlu, specs["synthetic_mmlu"], ctx),
                ),
            )
        ),
        "multiple_choice_loglik": Workload(
            (call("choice", multiple_choice.build_choice_requests(mmlu, ctx)),)
        ),
        "reference_loss": Workload(
            tuple(
                call("loss", reference_loss.build_requests(load(d), ctx))
                for d in REFERENCE_DATASETS
            )
        ),
        "text_loss": Workload(
            (
                call("generate", text_loss.gate_requests(ctx, gate)),
                call("loss", text_loss.build_requests(load("fineweb"), ctx)),
            )
        ),
        "if_eval": Workload(
            (
                call(
                    "generate",
                    if_eval.build_requests(
                        load("if_eval_v2", max(1, samples // 2)), specs["if_eval_v2"], ctx
                    ),
                ),
            )
        ),
    }


# ---- measurement ---------------------------------------------------------------------------


class PeakMemory:
    """Peak memory above the level at entry, in MiB (None where it cannot be read)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = _rss_kb("VmRSS") if _reset_peak_rss() else None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._base is not None:
            self.mb = max(0, _rss_kb("VmHWM") - self._base) / 1024


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_calls(engine: Engine, workload: Workload) -> list[list]:
    """Answer each call of `workload` with `engine`."""
    return [getattr(engine, RUN[c.kind])(list(c.requests)) for c in workload.calls]


def timed(
    fn: Callable[[], list], device: torch.device, repeats: int = 1
) -> tuple[list, float, float | None]:
    """`fn`'s answers, its best wall time over `repeats` runs, and the first run's peak MiB."""
    best = float("inf")
    out: list = []
    peak_mb = None
    for attempt in range(max(1, repeats)):
        with PeakMemory(device) as peak:
            start = time.perf_counter()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
        peak_mb = peak.mb if attempt == 0 else peak_mb
    return out, best, peak_mb


def warm_up(engine: Engine, workload: Workload, rows: int = 4) -> None:
    """A small call of each kind of `workload`, so that one-off set-up is not timed."""
    for c in workload.calls:
        requests = list(c.requests[:rows])
        if not requests:
            continue
        if c.kind == "generate":
            requests = [replace(r, max_new_tokens=2) for r in requests]
        getattr(engine, RUN[c.kind])(requests)


# Scores must agree to this relative difference in fp32 (the bound); half precision
# rounds a padded batch differently from a lone row, so it gets a looser one.
FP32_REL = 1e-5
HALF_REL = 1e-2


def compare(kind: str, got: list, want: list, exact: bool) -> dict:
    """Whether an engine agrees with the reference answers `want` (the naive engine's).

    Generations are token ids, or text for lm-eval (`want` is then the naive answers as
    `generated_text` renders them).
    """
    pairs = list(zip(got, want, strict=True))
    if not pairs:  # a task with no request at this length: nothing to disagree on
        return {"scores_match": True}
    bound = FP32_REL if exact else HALF_REL
    if kind == "loss":
        rel = max(abs(g.mean - w.mean) / max(abs(w.mean), 1e-12) for g, w in pairs)
        return {"scores_match": rel <= bound, "max_rel_diff": rel}
    if kind == "choice":
        rel = max(
            abs(a - b) / max(abs(b), 1e-12)
            for g, w in pairs
            for a, b in zip(g.logprobs, w.logprobs, strict=True)
        )
        agree = sum(g.best == w.best for g, w in pairs) / len(pairs)
        ok = rel <= bound and agree == 1.0 if exact else agree >= 0.9
        return {"scores_match": ok, "max_rel_diff": rel, "agreement": agree}
    agree = sum(g == w for g, w in pairs) / len(pairs)
    # In bf16 a padded batch rounds differently from a lone row, and greedy decoding of a
    # near-uniform random model flips on the smallest change: generations are reported, not
    # checked (None). fp32 must agree token for token.
    return {"scores_match": agree == 1.0 if exact else None, "agreement": agree}


def _merge(checks: list[dict]) -> dict:
    """One verdict for a workload of several calls: all must match; worst figures kept."""
    verdicts = [c["scores_match"] for c in checks]
    merged: dict = {
        "scores_match": False if False in verdicts else (None if None in verdicts else True)
    }
    for check in checks:
        for key, value in check.items():
            if key == "scores_match":
                continue
            worse = min if key.endswith("agreement") else max
            merged[key] = worse(merged[key], value) if key in merged else value
    return merged


def _work_tokens(workload: Workload, answers: list[list]) -> int:
    """Tokens processed: every token of a loss or choice request; for generation, generated."""
    total = 0
    for c, results in zip(workload.calls, answers, strict=True):
        if c.kind == "generate":
            total += sum(len(r.token_ids) for r in results)
        elif c.kind == "loss":
            total += sum(len(r.token_ids) for r in c.requests)
        else:
            total += sum(len(r.prompt_ids) for r in c.requests)
    return total


def workload_flops(shape: ModelShape, workload: Workload, answers: list[list]) -> int:
    """FLOPs the workload needs (see `_bench_limits`), generations as long as `answers`."""
    return sum(
        call_flops(shape, c.kind, c.requests, results)
        for c, results in zip(workload.calls, answers, strict=True)
    )


@dataclass(frozen=True)
class Baselines:
    """The engines a method is measured with. `lm_eval` is None with `lm_eval_reason`."""

    engine: Engine
    naive: Engine
    lm_eval: Any = None
    lm_eval_reason: str = ""
    text_of: Callable[[Any, Any], str] | None = None  # (naive result, request) -> lm-eval text


def _as_text(baselines: Baselines, workload: Workload, answers: list[list]) -> list[list]:
    """The naive answers with each generation rendered as lm-eval reports it."""
    out = []
    for c, results in zip(workload.calls, answers, strict=True):
        if c.kind == "generate" and baselines.text_of is not None:
            results = [baselines.text_of(g, r) for g, r in zip(results, c.requests, strict=True)]
        out.append(results)
    return out


def bench_workload(
    workload: Workload,
    baselines: Baselines,
    device: torch.device,
    *,
    exact: bool,
    shape: ModelShape,
    peak_gflops: float,
    repeats: int = 1,
    warm: bool = True,
) -> dict:
    """Warm every engine up, time them on the same calls, and compare their answers.

    Args:
        workload: the method's engine calls.
        baselines: the engine under test, the naive reference, and lm-eval (optional).
        device: where the engines run (for synchronisation and peak memory).
        exact: fp32: scores must agree to `FP32_REL` and generations token for token.
        shape: the model's sizes, for the FLOPs the workload needs.
        peak_gflops: the machine's measured matmul peak for this model and dtype.
        repeats: timed runs of each engine, the engines taking turns; the best is kept.
        warm: warm each engine up on a few requests before timing.

    Returns:
        The method's report entry: ``engine_s``, ``naive_s``, ``lm_eval_s`` (None, with
        ``lm_eval_reason``, without lm-eval), ``speedup_vs_naive``, ``speedup_vs_lm_eval``,
        ``utilization`` (the engine's fraction of the peak; ``utilization_all`` has every
        engine's), ``scores_match`` (every engine agrees with the naive answers), the
        figures behind it, ``peak_mem_mb``, ``tokens_per_s``, ``gflop`` and ``samples``.
    """
    engines = {"engine": baselines.engine, "naive": baselines.naive}
    if baselines.lm_eval is not None:
        engines["lm_eval"] = baselines.lm_eval
    answers, seconds, peaks = {}, {}, {}
    if warm:
        for engine in engines.values():
            warm_up(engine, workload)
    # The engines take turns, `repeats` times (best kept): a change of load on a shared
    # machine then falls on every engine alike rather than on whichever runs last.
    for attempt in range(max(1, repeats)):
        for name, engine in engines.items():
            got, took, peak = timed(lambda engine=engine: run_calls(engine, workload), device)
            seconds[name] = min(took, seconds.get(name, took))
            if attempt == 0:
                answers[name], peaks[name] = got, peak
    want = answers["naive"]
    checks = {"engine": _merge([compare(c.kind, g, w, exact) for c, g, w in
                                zip(workload.calls, answers["engine"], want, strict=True)])}
    if "lm_eval" in answers:
        texts = _as_text(baselines, workload, want)
        checks["lm_eval"] = _merge([compare(c.kind, g, w, exact) for c, g, w in
                                    zip(workload.calls, answers["lm_eval"], texts, strict=True)])
    flops = workload_flops(shape, workload, want)
    work = _work_tokens(workload, want)
    lm_s = seconds.get("lm_eval")
    verdicts = [c["scores_match"] for c in checks.values()]
    return {
        "samples": workload.samples,
        "engine_s": seconds["engine"],
        "naive_s": seconds["naive"],
        "lm_eval_s": lm_s,
        **({} if lm_s is not None else {"lm_eval_reason": baselines.lm_eval_reason}),
        "speedup_vs_naive": seconds["naive"] / seconds["engine"],
        "speedup_vs_lm_eval": lm_s / seconds["engine"] if lm_s is not None else None,
        "utilization": flops / seconds["engine"] / 1e9 / peak_gflops,
        "utilization_all": {n: flops / s / 1e9 / peak_gflops for n, s in seconds.items()},
        "scores_match": False if False in verdicts else (None if None in verdicts else True),
        "checks": checks,
        "gflop": flops / 1e9,
        "peak_mem_mb": {name: peaks.get(name) for name in ("engine", "naive", "lm_eval")},
        "tokens_per_s": {name: work / s for name, s in seconds.items()},
    }


__all__ = [
    "Baselines",
    "Call",
    "IdMap",
    "PeakMemory",
    "Workload",
    "bench_workload",
    "build_workloads",
    "cap_generation",
    "compare",
    "run_calls",
    "timed",
    "warm_up",
    "workload_flops",
]
