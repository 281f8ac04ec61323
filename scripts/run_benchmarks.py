#!/usr/bin/env python3
"""Benchmark the batched engine against the naive one on each eval method.

Each method's requests are built as an evaluation builds them: the bundled offline task
samples (SYNTHETIC_MMLU, SYNTHETIC_1_SFT, CODEFORCES_COTS, WORD_SORTING, FINEWEB, IF_EVAL_V2)
through the method's own build functions and the model's chat template. The same calls go to
`BatchedEngine` and `NaiveEngine` (one sample per forward, full logits: how the reference
subnet scores). Scores must agree; the table reports time, tokens/s, peak memory and speedup.
The measurement itself lives in `finetune.eval.benchmark`.

On a shared CPU, timings depend on what else runs: the report records the torch thread count
and the load average, and `--threads 1` measures the work itself, free of thread contention.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from competitions import tasks  # noqa: E402
from finetune.eval.benchmark import Call, Workload, bench_workload, build_workloads  # noqa: E402
from finetune.eval.engine import BatchedEngine  # noqa: E402
from finetune.eval.naive import NaiveEngine  # noqa: E402
from finetune.eval.requests import LossRequest  # noqa: E402
from finetune.validator.cli import FlagParser  # noqa: E402

logger = logging.getLogger("run_benchmarks")

# A Qwen2.5-0.5B-like shape, randomly initialised: the real one is never downloaded.
QWEN2_05B = dict(
    hidden_size=896,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    intermediate_size=4864,
    vocab_size=151936,
    tie_word_embeddings=True,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
)
# The tasks whose generation settings the requests use (weights do not matter here).
SPECS = {
    "synthetic_mmlu": tasks.synthetic_mmlu(1.0),
    "if_eval_v2": tasks.if_eval_v2(1.0),
    "fineweb": tasks.fineweb(1.0),
}


def load_model(name: str, tmp: Path, device: str, dtype: torch.dtype):
    """The model and its tokenizer: `tiny`, `qwen2-0.5b` (random weights) or a local dir."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from finetune.tiny_model import build_tiny_model, build_tokenizer

    if name == "qwen2-0.5b":
        config = AutoConfig.for_model("qwen2", **QWEN2_05B)
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        return model.eval(), build_tokenizer()
    path = build_tiny_model(tmp / "tiny") if name == "tiny" else Path(name)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False)
    return model.to(device).eval(), AutoTokenizer.from_pretrained(path)


def bench_long(device: torch.device, dtype: torch.dtype, seq_len: int, tmp: Path) -> dict:
    """Reference loss over one long sample, 150k vocabulary: chunked head vs full logits."""
    model, _ = load_model("qwen2-0.5b", tmp, str(device), dtype)
    model.config.use_cache = False  # a loss pass needs no KV cache; keep it out of both peaks
    rng = random.Random(1)
    ids = tuple(rng.randrange(QWEN2_05B["vocab_size"]) for _ in range(seq_len))
    workload = Workload((Call("loss", (LossRequest(ids, score_from=seq_len // 4),)),))
    engine = BatchedEngine(model, device=device, batch_tokens=seq_len)
    naive = NaiveEngine(model, device=device)
    exact = dtype == torch.float32
    result = bench_workload(workload, engine, naive, device, exact=exact, warm=False)
    mem = result["peak_mem_mb"]
    if mem["engine"] and mem["naive"]:
        result["peak_mem_ratio"] = mem["naive"] / mem["engine"]
    result["sequence_length"] = seq_len
    result["dtype"] = str(dtype).removeprefix("torch.")
    del model, engine, naive
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = FlagParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few samples per task")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="torch device")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="model dtype")
    parser.add_argument("--model", default="tiny", help="tiny, qwen2-0.5b or a model directory")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results here")
    parser.add_argument("--eval-samples", dest="samples", type=int, metavar="N",
                        help="samples per task (default: 12 with --quick, else 48)")
    parser.add_argument("--samples", dest="samples", type=int, help=argparse.SUPPRESS)  # its old name
    parser.add_argument("--seq-len", type=int, default=512, metavar="N", help="competition sequence length")
    parser.add_argument("--batch-tokens", type=int, metavar="N",
                        help="engine token budget per batch (default: 4096 on cpu, 65536 on cuda)")
    parser.add_argument("--methods", help="comma-separated subset of the methods (default: all)")
    parser.add_argument("--repeats", type=int, default=3, metavar="N", help="timed runs of loss/choice work")
    parser.add_argument("--long", action="store_true", help="also run the long-sample memory test")
    parser.add_argument("--long-seq", type=int, default=16384, metavar="N", help="long-sample length")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the sample draw")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """Run every benchmark the arguments ask for; return the report."""
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    samples = args.samples or (12 if args.quick else 48)
    budget = args.batch_tokens or (4096 if device.type == "cpu" else 65536)
    report: dict = {"device": str(device), "model": args.model, "dtype": args.dtype}
    report |= {"samples": samples, "seq_len": args.seq_len, "batch_tokens": budget}
    report |= {"threads": torch.get_num_threads(), "load_avg_before": os.getloadavg()[0]}
    report["methods"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = load_model(args.model, Path(tmp), args.device, dtype)
        workloads = build_workloads(
            tokenizer,
            model.config.vocab_size,
            SPECS,
            samples=samples,
            sequence_length=args.seq_len,
            seed=args.seed,
        )
        wanted = args.methods.split(",") if args.methods else list(workloads)
        engine = BatchedEngine(model, device=device, batch_tokens=budget)
        naive = NaiveEngine(model, device=device)
        for name in wanted:
            logger.info("benchmarking %s", name)
            workload = workloads[name]
            generates = any(c.kind == "generate" for c in workload.calls)
            report["methods"][name] = bench_workload(
                workload,
                engine,
                naive,
                device,
                exact=dtype == torch.float32,
                repeats=1 if generates else args.repeats,
            )
        del model, engine, naive
        if args.long or (device.type == "cuda" and not args.quick):
            # bf16 on CUDA, as validators run: in fp32 the attention kernels fall back to the
            # math path, whose [heads, seq, seq] scores then dwarf the logits being measured.
            long_dtype = torch.bfloat16 if device.type == "cuda" else dtype
            report["long_reference_loss_memory"] = bench_long(
                device, long_dtype, args.long_seq, Path(tmp)
            )
    report["competition_totals"] = competition_totals(report["methods"])
    report["load_avg_after"] = os.getloadavg()[0]
    return report


# The methods a whole competition round runs (INSTRUCT_8B / B7_MULTICHOICE: generated-letter
# multiple choice, word-sorting reference loss, FineWeb text loss, IF-eval).
INSTRUCT_METHODS = ("multiple_choice", "reference_loss", "text_loss", "if_eval")


def competition_totals(methods: dict) -> dict:
    """Summed times of a competition's methods: the speedup of a full evaluation."""
    totals = {}
    for name, wanted in (("instruct_competition", INSTRUCT_METHODS), ("all_methods", tuple(methods))):
        if not all(m in methods for m in wanted):
            continue
        engine = sum(methods[m]["engine_s"] for m in wanted)
        naive = sum(methods[m]["naive_s"] for m in wanted)
        totals[name] = {"methods": list(wanted), "engine_s": engine, "naive_s": naive,
                        "speedup": naive / engine if engine > 0 else None}
    return totals


def _match_text(result: dict) -> str:
    if result["scores_match"] is None:
        return f"{result['agreement']:.0%} same"
    return "yes" if result["scores_match"] else "NO"


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (
        f"engine vs naive: {report['model']} on {report['device']} ({report['dtype']}, "
        f"{report['threads']} threads, load {report['load_avg_before']:.1f})"
    )
    table = Table(title=title)
    columns = (
        "method,n,engine s,naive s,speedup,engine tok/s,naive tok/s,engine MiB,naive MiB,match"
    )
    for col in columns.split(","):
        table.add_column(col, justify="left" if col == "method" else "right")
    rows = dict(report["methods"])
    if "long_reference_loss_memory" in report:
        rows["long_reference_loss_memory"] = report["long_reference_loss_memory"]

    def mb(x):
        return "-" if x is None else f"{x:,.0f}"

    for name, r in rows.items():
        table.add_row(
            name,
            str(r["samples"]),
            f"{r['engine_s']:.2f}",
            f"{r['naive_s']:.2f}",
            f"{r['speedup']:.1f}x",
            f"{r['tokens_per_s']['engine']:,.0f}",
            f"{r['tokens_per_s']['naive']:,.0f}",
            mb(r["peak_mem_mb"]["engine"]),
            mb(r["peak_mem_mb"]["naive"]),
            _match_text(r),
        )
    console = Console(width=max(140, Console().width))
    console.print(table)
    for name, total in report.get("competition_totals", {}).items():
        console.print(f"{name}: engine {total['engine_s']:.2f}s, naive {total['naive_s']:.2f}s, "
                      f"speedup {total['speedup']:.1f}x ({', '.join(total['methods'])})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = run(args)
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    all_match = all(r["scores_match"] is not False for r in report["methods"].values())
    return 0 if all_match else 1


if __name__ == "__main__":
    raise SystemExit(main())
