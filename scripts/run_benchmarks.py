#!/usr/bin/env python3
"""Benchmark the batched engine against its baselines, the machine's limit, and whole rounds.

- **Methods**: each eval method's requests, built as an evaluation builds them (the task
  samples through the method's build functions and the model's chat template), go to the
  batched engine, the naive per-sample engine (how the reference subnet scores: the
  reference answers) and lm-evaluation-harness's Hugging Face backend (``pip install -e
  '.[bench]'``; without it the report says so). Scores must agree (1e-5 relative in fp32,
  identical generations); the table gives time, tokens/s, peak memory and the speedups.
- **The limit**: FLOPs per token from the model's config, the matmul peak measured in this
  run on the model's shapes and dtype, and each engine's share of it.
- **Memory at length**: one long reference-loss request, chunked head against full logits.
- **A round**: a local subnet whose validator scores N models (`_bench_round`), phase by phase.
- **Agreement**: bf16 batched against bf16 per-sample reference loss on those N models.

The model is of a realistic shape with random weights, built offline (`_bench_data`), and the
traces are as long as a live round's. ``--quick`` keeps every section and key on smaller
sizes (``make benchmark``). On a shared CPU timings depend on what else runs: the report
records the threads and the load average; ratios are only meaningful from a quiet machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from competitions import tasks  # noqa: E402
from finetune.eval import _bench_data as data  # noqa: E402
from finetune.eval._bench_agreement import bf16_agreement  # noqa: E402
from finetune.eval._bench_limits import ModelShape, matmul_peak  # noqa: E402
from finetune.eval._lm_eval_engine import LmEvalEngine, generated_text, unavailable  # noqa: E402
from finetune.eval.benchmark import (  # noqa: E402
    Baselines,
    Call,
    Workload,
    bench_workload,
    build_workloads,
    cap_generation,
)
from finetune.eval.engine import BatchedEngine  # noqa: E402
from finetune.eval.naive import NaiveEngine  # noqa: E402
from finetune.eval.requests import LossRequest  # noqa: E402
from finetune.validator.cli import FlagParser  # noqa: E402

logger = logging.getLogger("run_benchmarks")

# The tasks whose generation settings the requests use (weights do not matter here).
SPECS = {
    "synthetic_mmlu": tasks.synthetic_mmlu(1.0),
    "if_eval_v2": tasks.if_eval_v2(1.0),
    "fineweb": tasks.fineweb(1.0),
}
MODELS = {"llama-75m": ("llama", data.LLAMA_75M), "qwen2-0.5b": ("qwen2", data.QWEN2_05B),
          "llama-3b": ("llama", data.LLAMA_3B), "llama-8b": ("llama", data.LLAMA_8B)}  # the last two: GPU
# Sizes: (full, quick). Sequence lengths like the live traces' (16k on a GPU).
SIZES = {
    "samples": (8, 4), "seq_len": (4096, 2048), "cuda_seq_len": (16_384, 4096),
    "long_seq": (8192, 4096), "cuda_long_seq": (16_384, 16_384),
    "round_samples": (4, 3), "agreement_samples": (2, 1),
}


def _size(args: argparse.Namespace, name: str, device: torch.device) -> int:
    key = f"cuda_{name}" if device.type == "cuda" and f"cuda_{name}" in SIZES else name
    return SIZES[key][1 if args.quick else 0]


# ---- models --------------------------------------------------------------------------------


def model_dirs(kind: str, tmp: Path, count: int, dtype: torch.dtype = torch.float32) -> list[Path]:
    """`count` models of one shape (seeds 0..count-1) on disk in `dtype`, with their tokenizer."""
    from finetune.tiny_model import build_tiny_model

    dirs = []
    for seed in range(count):
        out = tmp / "models" / f"{kind}-{seed}"
        if not (out / "config.json").is_file():
            if kind == "tiny":
                build_tiny_model(out, seed=seed)
            else:
                model_type, shape = MODELS[kind]
                files = data.gpt4_tokenizer_files(tmp / "gpt4")
                data.build_bench_model(out, files, seed=seed, shape=shape, model_type=model_type,
                                       dtype=dtype)
        dirs.append(out)
    return dirs


def load_model(path: Path, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False)
    return model.to(device).eval(), AutoTokenizer.from_pretrained(path)


# ---- sections ------------------------------------------------------------------------------


def bench_methods(args, model, tokenizer, long_rows, device, budget) -> tuple[dict, dict]:
    """Every method on the three engines; and the limits (FLOPs, measured peak)."""
    dtype = next(model.parameters()).dtype
    shape = ModelShape.from_config(model.config)
    peak = matmul_peak(shape, dtype=dtype, device=device, rows=budget)
    limits = {"model_params": shape.params(), **dataclasses.asdict(shape),
              "body_flops_per_token": shape.body_flops, "head_flops_per_position": shape.head_flops, **peak}
    workloads = build_workloads(tokenizer, len(tokenizer), SPECS, samples=args.samples,
                                sequence_length=args.seq_len, seed=args.seed, data=long_rows.data)
    if args.max_new_tokens:
        workloads = cap_generation(workloads, args.max_new_tokens)
    reason = "disabled by --no-lm-eval" if args.no_lm_eval else unavailable()
    lm = None if reason else LmEvalEngine(model, tokenizer, batch_tokens=budget,
                                          max_length=max(args.seq_len, args.long_seq) + 512)
    baselines = Baselines(
        engine=BatchedEngine(model, device=device, batch_tokens=budget),
        naive=NaiveEngine(model, device=device), lm_eval=lm, lm_eval_reason=reason or "",
        text_of=lambda g, r: generated_text(tokenizer, g.token_ids, r.stop_ids),
    )
    methods = {}
    for name in args.methods.split(",") if args.methods else list(workloads):
        logger.info("benchmarking %s", name)
        workload = workloads[name]
        generates = any(c.kind == "generate" for c in workload.calls)
        methods[name] = bench_workload(
            workload, baselines, device, exact=dtype == torch.float32, shape=shape,
            peak_gflops=peak["peak_gflops"], repeats=1 if generates else args.repeats,
        )
    if lm is not None:
        limits["lm_eval_prompt_mismatches"] = lm.prompt_mismatches
    return methods, limits


def bench_long(args, model, tokenizer, device, budget: int, peak_gflops: float) -> dict:
    """One long reference-loss request: chunked head (engine) against full logits."""
    rng = random.Random(1)
    n = args.long_seq
    ids = tuple(rng.randrange(min(len(tokenizer), model.config.vocab_size)) for _ in range(n))
    workload = Workload((Call("loss", (LossRequest(ids, score_from=n // 4),)),))
    reason = "disabled by --no-lm-eval" if args.no_lm_eval else unavailable()
    lm = None if reason else LmEvalEngine(model, tokenizer, batch_tokens=n, max_length=n + 1)
    baselines = Baselines(BatchedEngine(model, device=device, batch_tokens=max(budget, n)),
                          NaiveEngine(model, device=device), lm, reason or "")
    shape = ModelShape.from_config(model.config)
    use_cache = model.config.use_cache
    model.config.use_cache = False  # a loss pass needs no KV cache; keep it out of every peak
    try:
        result = bench_workload(workload, baselines, device, exact=True, shape=shape,
                                peak_gflops=peak_gflops, warm=False)
    finally:
        model.config.use_cache = use_cache
    mem = result["peak_mem_mb"]
    result["sequence_length"] = n
    result["full_logits_mb"] = n * shape.vocab * 4 / 2**20
    if mem["engine"] and mem["naive"]:
        result["peak_mem_ratio"] = mem["naive"] / mem["engine"]
    return result


def round_benchmark(args, kind: str, tmp: Path, long_rows, device: torch.device, budget: int) -> dict:
    """A validator round over `args.round_models` models (see `_bench_round`)."""
    spec = importlib.util.spec_from_file_location("_bench_round", Path(__file__).with_name("_bench_round.py"))
    bench_round = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench_round
    spec.loader.exec_module(bench_round)
    tiny = kind == "tiny"
    competition = bench_round.bench_competition(
        samples=args.round_samples, sequence_length=args.seq_len, fixed_tokenizer=not tiny,
        dtype=args.dtype)
    dirs = model_dirs(kind, tmp, args.round_models, getattr(torch, args.dtype))
    work = tmp / "round"
    work.mkdir(parents=True, exist_ok=True)
    return bench_round.run_round(work, dirs, competition, long_rows.data, device=str(device),
                                 batch_tokens=budget, tokenizer_dir=None if tiny else tmp / "gpt4")


def agreement(args, kind: str, tmp: Path, tokenizer, long_rows, device, budget) -> dict:
    dirs = model_dirs(kind, tmp, args.round_models)
    workload = build_workloads(tokenizer, len(tokenizer), SPECS, samples=args.agreement_samples,
                               sequence_length=args.seq_len, seed=args.seed, data=long_rows.data)
    calls = [c.requests for c in workload["reference_loss"].calls if c.requests]
    return bf16_agreement(lambda i: load_model(dirs[i], device, torch.float32)[0], len(dirs), calls,
                          device=device, batch_tokens=budget)


# ---- the run -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = FlagParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="every section on smaller sizes (make benchmark)")
    add("--device", default="cpu", choices=("cpu", "cuda"), help="torch device")
    add("--dtype", default="float32", choices=("float32", "bfloat16"), help="model dtype of the methods")
    add("--model", default="llama-75m", help="llama-75m, qwen2-0.5b, llama-3b, llama-8b (random weights) or tiny")
    add("--json", type=Path, metavar="FILE", help="write the results here")
    add("--eval-samples", dest="samples", type=int, metavar="N", help="samples per task (8; 4 quick)")
    add("--samples", dest="samples", type=int, help=argparse.SUPPRESS)  # its old name
    add("--seq-len", type=int, metavar="N", help="competition sequence length (4096, cuda 16384; quick 2048)")
    add("--batch-tokens", type=int, default=8192, metavar="N", help="engine token budget per batch")
    add("--max-new-tokens", type=int, metavar="N", help="cap on tokens generated per request (default: the tasks')")
    add("--methods", help="comma-separated subset of the methods (default: all)")
    add("--repeats", type=int, default=1, metavar="N", help="timed runs of loss/choice work, the engines taking turns (best kept)")
    add("--long-seq", type=int, metavar="N", help="length of the long-sample memory test")
    add("--round-models", type=int, default=8, metavar="N", help="models in the round (0: no round)")
    add("--round-samples", type=int, metavar="N", help="samples per task of the round")
    add("--agreement-samples", type=int, metavar="N", help="samples per task of the bf16 agreement")
    add("--no-agreement", action="store_true", help="skip the bf16 agreement")
    add("--no-lm-eval", action="store_true", help="do not run lm-evaluation-harness")
    add("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    add("--seed", type=int, default=0, metavar="N", help="seed of the sample draw")
    args = parser.parse_args(argv)
    if args.model not in (*MODELS, "tiny"):
        parser.error(f"--model {args.model!r}: choose from {', '.join((*MODELS, 'tiny'))}")
    return args


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run(args: argparse.Namespace) -> dict:
    """Run every section the arguments ask for; return the report."""
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    tiny = args.model == "tiny"
    args.samples = args.samples or _size(args, "samples", device)
    args.seq_len = args.seq_len or (512 if tiny else _size(args, "seq_len", device))
    args.long_seq = args.long_seq or (2048 if tiny else _size(args, "long_seq", device))
    args.round_samples = args.round_samples or _size(args, "round_samples", device)
    args.agreement_samples = args.agreement_samples or _size(args, "agreement_samples", device)
    budget = args.batch_tokens
    report: dict = {"device": str(device), "model": args.model, "dtype": args.dtype, "quick": args.quick,
                    "samples": args.samples, "seq_len": args.seq_len, "batch_tokens": budget,
                    "seed": args.seed, "git_revision": _git_revision(),
                    "threads": torch.get_num_threads(), "load_avg_before": os.getloadavg()[0]}
    sections = report["section_s"] = {}  # wall time of each section, set-up included
    clock = time.perf_counter()

    def lap(section: str) -> None:
        nonlocal clock
        sections[section] = time.perf_counter() - clock
        clock = time.perf_counter()
        if args.json:  # what is done so far, in case a later section is stopped
            _write(args.json, report)

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        model, tokenizer = load_model(model_dirs(args.model, tmp, 1, dtype)[0], device, dtype)
        long_rows = data.write_long_rows(tmp / "data", tokenizer, sequence_length=args.seq_len, seed=args.seed)
        report["trace_tokens"] = {k: [min(v), max(v)] for k, v in long_rows.tokens.items()}
        lap("setup")
        report["methods"], report["limits"] = bench_methods(args, model, tokenizer, long_rows, device, budget)
        lap("methods")
        report["long_reference_loss_memory"] = bench_long(
            args, model, tokenizer, device, budget, report["limits"]["peak_gflops"])
        lap("long_reference_loss_memory")
        del model
        if args.round_models > 0:
            report["round"] = round_benchmark(args, args.model, tmp, long_rows, device, budget)
            lap("round")
            if not args.no_agreement:
                report["agreement"] = agreement(args, args.model, tmp, tokenizer, long_rows, device, budget)
                lap("agreement")
    report["load_avg_after"] = os.getloadavg()[0]
    return report


# ---- the tables ----------------------------------------------------------------------------


def _num(x, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def print_tables(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(160, Console().width))
    limits = report["limits"]
    title = (f"engine vs naive vs lm-eval: {report['model']} ({limits['model_params'] / 1e6:.1f}M params) on "
             f"{report['device']}, {report['dtype']}, seq {report['seq_len']}, {report['threads']} threads, "
             f"load {report['load_avg_before']:.1f}; matmul peak {limits['peak_gflops']:.0f} GFLOP/s")
    table = Table(title=title)
    cols = ("method,n,engine s,naive s,lm-eval s,x naive,x lm-eval,util,engine tok/s,"
            "MiB engine,MiB naive,MiB lm-eval,match")
    for col in cols.split(","):
        table.add_column(col, justify="left" if col == "method" else "right")
    rows = {**report["methods"], "long_reference_loss": report["long_reference_loss_memory"]}
    for name, r in rows.items():
        mem = r["peak_mem_mb"]
        table.add_row(
            name, str(r["samples"]), _num(r["engine_s"]), _num(r["naive_s"]),
            _num(r["lm_eval_s"]) if r["lm_eval_s"] is not None else "n/a",
            _num(r["speedup_vs_naive"], "{:.1f}x"), _num(r["speedup_vs_lm_eval"], "{:.1f}x"),
            _num(r.get("utilization"), "{:.0%}"), _num(r["tokens_per_s"]["engine"], "{:,.0f}"),
            *(_num(mem[k], "{:,.0f}") for k in ("engine", "naive", "lm_eval")),
            {True: "yes", False: "NO", None: "n/a"}[r["scores_match"]],
        )
    console.print(table)
    reason = next((r["lm_eval_reason"] for r in report["methods"].values() if r.get("lm_eval_reason")), None)
    if reason:
        console.print(f"lm-eval: not run ({reason})", markup=False)
    if "round" in report:
        _print_round(console, report["round"])
    if "agreement" in report:
        _print_agreement(console, report["agreement"])


def _print_round(console, rnd: dict) -> None:
    from rich.table import Table

    table = Table(title=f"a round of {rnd['models']} models: {rnd['total_s']:.1f}s, scoring "
                        f"{rnd['scoring_s']:.1f}s, not scoring {rnd['overhead_fraction']:.1%} "
                        f"({_num(rnd['overlapped_overhead_fraction'], '{:.1%}')} with downloads and "
                        f"checks beside the round, as in the daemon)")
    for col in ("phase", "total s", "per model s", "share"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for phase, t in rnd["phases"].items():
        table.add_row(phase, f"{t['total_s']:.2f}", _num(t["mean_s"]), f"{t['total_s'] / rnd['total_s']:.1%}")
    console.print(table)
    if rnd["failed"]:
        console.print(f"failed in the round: {rnd['failed']}", markup=False)


def _print_agreement(console, agree: dict) -> None:
    for kind in ("fp32_logits", "model_dtype"):
        a = agree[kind]
        swaps = a["swaps_batched_vs_single"]
        console.print(
            f"bf16 agreement ({kind}, {agree['models']} models x {agree['samples']} samples): per sample "
            f"max {a['sample_rel_diff']['max']:.2e} mean {a['sample_rel_diff']['mean']:.2e}; per model max "
            f"{a['model_rel_diff']['max']:.2e}; fp32-close pairs {swaps['close_pairs']}, swapped "
            f"batched vs per-sample {swaps['swapped']}, vs fp32 {a['swaps_batched_vs_fp32']['swapped']} "
            f"(batched) / {a['swaps_single_vs_fp32']['swapped']} (per-sample)", markup=False)


def _write(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**report, "load_avg_now": os.getloadavg()[0]}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("lm-eval", "lm_eval", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    report = run(args)
    print_tables(report)
    if args.json:
        _write(args.json, report)
    return 0 if all(r["scores_match"] is not False for r in report["methods"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
