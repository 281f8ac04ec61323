#!/usr/bin/env python3
"""Benchmark the batched engine against the naive one on each eval method.

The same requests go through `BatchedEngine` and `NaiveEngine` (one sample per forward, full
logits: how the reference subnet scores). Scores must agree; the table reports time, tokens/s,
peak memory and speedup. Requests are built offline from deterministic synthetic text
(word sorting, multiple-choice questions, documents, instruction prompts) through the
tokenizer's chat template.

Peak memory is the peak above what was held before the run (the weights): on CUDA from
`torch.cuda.max_memory_allocated`, on CPU from the process's peak RSS (reset through
/proc/self/clear_refs).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from finetune.eval.engine import BatchedEngine  # noqa: E402
from finetune.eval.naive import NaiveEngine  # noqa: E402
from finetune.eval.requests import ChoiceRequest, GenerationRequest, LossRequest  # noqa: E402

logger = logging.getLogger("run_benchmarks")

WORDS = (
    "apple river stone garden window silver music planet forest bridge candle harbor orange "
    "pencil rocket summer winter valley marble thunder lantern meadow castle anchor blanket "
    "cactus dragon engine falcon glacier hammer island jacket kettle ladder magnet needle "
    "oyster parrot quartz ribbon saddle tunnel umbrella violin walnut yellow zebra basket "
    "copper desert feather ginger helmet iron jungle kitten lemon mirror number ocean pepper "
    "puzzle rabbit shadow tomato velvet wagon yogurt"
).split()
RULES = (
    "Answer in at most 30 words.",
    "Do not use any commas.",
    "Write the whole answer in lower case.",
    "Include the keyword 'river' twice.",
    "End your answer with 'Is there anything else?'",
    "Use exactly two markdown bullet points.",
)
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


@dataclass(frozen=True)
class Method:
    kind: str  # "loss", "choice" or "generate"
    requests: list
    work_tokens: int  # tokens processed (loss, choice) or to be generated at most


# ---- data ------------------------------------------------------------------------------------


class Encoder:
    """Chat-templated prompts to token ids, remapped into the model's vocabulary."""

    def __init__(self, tokenizer, vocab: int) -> None:
        self.tokenizer = tokenizer
        small = len(tokenizer)
        # An affine map spreads the tokenizer's ids over a larger vocabulary (gcd(97, v) = 1).
        self.remap = (lambda i: i) if vocab <= small else (lambda i: (i * 97 + 11) % vocab)
        self.stop_ids = (self.remap(tokenizer.eos_token_id),)

    def ids(self, text: str) -> list[int]:
        return [self.remap(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def prompt(self, user: str) -> list[int]:
        messages = [{"role": "user", "content": user}]
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return self.ids(text)


def _sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)).capitalize() + "."


def _question(rng: random.Random) -> str:
    body = " ".join(_sentence(rng, rng.randint(5, 15)) for _ in range(rng.randint(1, 8)))
    options = "\n".join(f"{letter}. {_sentence(rng, rng.randint(1, 6))}" for letter in "ABCD")
    return f"{body}\nWhich option fits best?\n{options}\nAnswer with the letter only."


def build_methods(enc: Encoder, n: int, seq_len: int, seed: int = 0) -> dict[str, Method]:
    """The requests of each benchmarked method, `n` samples each, deterministic in `seed`."""
    rng = random.Random(seed)
    questions = [enc.prompt(_question(rng))[-seq_len:] for _ in range(n)]
    letters = tuple(enc.ids(letter)[0] for letter in "ABCD")
    refs = []
    for _ in range(n):
        words = rng.sample(WORDS, rng.randint(2, 20))
        context = enc.prompt(f"Sort the following words alphabetically: {' '.join(words)}.")
        answer = enc.ids(" ".join(sorted(words))) + list(enc.stop_ids)
        refs.append(LossRequest(tuple((context + answer)[-seq_len:]), score_from=len(context)))
    docs = []
    for _ in range(n):
        target = rng.randint(seq_len // 8, seq_len)
        text = " ".join(_sentence(rng, rng.randint(4, 20)) for _ in range(target // 6 + 2))
        docs.append(LossRequest(tuple(enc.ids(text)[:target]), score_from=1))
    if_prompts = []
    for _ in range(n):
        rules = "\n".join(
            f"{i + 1}. {r}" for i, r in enumerate(rng.sample(RULES, rng.randint(2, 5)))
        )
        question = _sentence(rng, rng.randint(6, 30))[:-1] + "?"
        if_prompts.append(enc.prompt(f'Answer "{question}" following these rules:\n{rules}'))

    def gen(prompts, max_new, penalty):
        reqs = [GenerationRequest(tuple(p), max_new, penalty, enc.stop_ids) for p in prompts]
        return Method("generate", reqs, max_new * len(reqs))

    return {
        "multiple_choice": gen(questions, 20, 1.1),
        "multiple_choice_loglik": Method(
            "choice",
            [ChoiceRequest(tuple(q), letters) for q in questions],
            sum(map(len, questions)),
        ),
        "reference_loss": Method("loss", refs, sum(len(r.token_ids) for r in refs)),
        "text_loss": Method("loss", docs, sum(len(r.token_ids) for r in docs)),
        "if_eval": gen(if_prompts, 200, 1.2),
    }


# ---- models ----------------------------------------------------------------------------------


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


# ---- measurement -----------------------------------------------------------------------------


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

    def __exit__(self, *exc) -> None:
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


def _timed(fn: Callable[[], list], device: torch.device) -> tuple[list, float, float | None]:
    with PeakMemory(device) as peak:
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return out, seconds, peak.mb


def compare(kind: str, got: list, want: list, exact: bool) -> dict:
    """Whether the engines agree: exact tolerances in fp32, looser ones in bf16."""
    if kind == "loss":
        rel = max(
            abs(g.mean - w.mean) / max(abs(w.mean), 1e-12) for g, w in zip(got, want, strict=True)
        )
        return {"scores_match": rel <= (1e-4 if exact else 1e-2), "max_rel_diff": rel}
    if kind == "choice":
        diff = max(
            abs(a - b)
            for g, w in zip(got, want, strict=True)
            for a, b in zip(g.logprobs, w.logprobs, strict=True)
        )
        agree = sum(g.best == w.best for g, w in zip(got, want, strict=True)) / len(got)
        ok = diff <= 1e-4 and agree == 1.0 if exact else agree >= 0.9
        return {"scores_match": ok, "max_abs_diff": diff, "agreement": agree}
    pairs = list(zip(got, want, strict=True))
    agree = sum(g == w for g, w in pairs) / len(pairs)
    prefix = sum(_common_prefix(g.token_ids, w.token_ids) for g, w in pairs)
    result = {
        "agreement": agree,
        "prefix_agreement": prefix / max(1, sum(len(w.token_ids) for _, w in pairs)),
    }
    # In bf16 a padded batch rounds differently from a lone row, and greedy decoding of a
    # near-uniform random model flips on the smallest change: generations are reported, not
    # checked (None). fp32 must agree token for token.
    return {"scores_match": agree == 1.0 if exact else None, **result}


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def bench_method(method: Method, engine: BatchedEngine, naive: NaiveEngine, exact: bool) -> dict:
    run = {"loss": "loss", "choice": "choice_logprobs", "generate": "generate"}[method.kind]
    got, engine_s, engine_mb = _timed(lambda: getattr(engine, run)(method.requests), engine.device)
    want, naive_s, naive_mb = _timed(lambda: getattr(naive, run)(method.requests), naive.device)
    if method.kind == "generate":
        work = sum(len(r.token_ids) for r in want)  # tokens actually generated
    else:
        work = method.work_tokens
    return {
        "samples": len(method.requests),
        "engine_s": engine_s,
        "naive_s": naive_s,
        "speedup": naive_s / engine_s,
        **compare(method.kind, got, want, exact),
        "peak_mem_mb": {"engine": engine_mb, "naive": naive_mb},
        "tokens_per_s": {"engine": work / engine_s, "naive": work / naive_s},
    }


def bench_long(device: torch.device, dtype: torch.dtype, seq_len: int, tmp: Path) -> dict:
    """Reference loss over one long sample, 150k vocabulary: chunked head vs full logits."""
    model, _ = load_model("qwen2-0.5b", tmp, str(device), dtype)
    model.config.use_cache = False  # a loss pass needs no KV cache; keep it out of both peaks
    rng = random.Random(1)
    ids = tuple(rng.randrange(QWEN2_05B["vocab_size"]) for _ in range(seq_len))
    requests = [LossRequest(ids, score_from=seq_len // 4)]
    engine = BatchedEngine(model, device=device, batch_tokens=seq_len)
    naive = NaiveEngine(model, device=device)
    result = bench_method(Method("loss", requests, seq_len), engine, naive, dtype == torch.float32)
    mem = result["peak_mem_mb"]
    if mem["engine"] and mem["naive"]:
        result["peak_mem_ratio"] = mem["naive"] / mem["engine"]
    result["sequence_length"] = seq_len
    result["dtype"] = str(dtype).removeprefix("torch.")
    del model, engine, naive
    return result


# ---- entry point -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few samples, short sequences")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--model", default="tiny", help="tiny, qwen2-0.5b or a model directory")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--samples", type=int, help="samples per method (default by mode)")
    parser.add_argument("--seq-len", type=int, help="longest prompt or document, in tokens")
    parser.add_argument("--batch-tokens", type=int, help="engine token budget per batch")
    parser.add_argument("--methods", help="comma-separated subset of the methods")
    parser.add_argument("--long", action="store_true", help="also run the long-sample memory test")
    parser.add_argument("--long-seq", type=int, default=16384, help="long-sample length")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """Run every benchmark the arguments ask for; return the report."""
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    samples = args.samples or (12 if args.quick else 48)
    seq_len = args.seq_len or (512 if args.quick else 1024)
    budget = args.batch_tokens or (4096 if device.type == "cpu" else 65536)
    report: dict = {"device": str(device), "model": args.model, "dtype": args.dtype}
    report |= {"samples": samples, "seq_len": seq_len, "batch_tokens": budget, "methods": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = load_model(args.model, Path(tmp), args.device, dtype)
        enc = Encoder(tokenizer, model.config.vocab_size)
        methods = build_methods(enc, samples, seq_len)
        wanted = args.methods.split(",") if args.methods else list(methods)
        engine = BatchedEngine(model, device=device, batch_tokens=budget)
        naive = NaiveEngine(model, device=device)
        _warm_up(engine, naive, methods)
        for name in wanted:
            logger.info("benchmarking %s", name)
            result = bench_method(methods[name], engine, naive, dtype == torch.float32)
            report["methods"][name] = result
        del model, engine, naive
        if args.long or (device.type == "cuda" and not args.quick):
            # bf16 on CUDA, as validators run: in fp32 the attention kernels fall back to the
            # math path, whose [heads, seq, seq] scores then dwarf the logits being measured.
            long_dtype = torch.bfloat16 if device.type == "cuda" else dtype
            report["long_reference_loss_memory"] = bench_long(
                device, long_dtype, args.long_seq, Path(tmp)
            )
    return report


def _warm_up(engine: BatchedEngine, naive: NaiveEngine, methods: dict[str, Method]) -> None:
    """One small call of each kind, so one-off set-up is not timed."""
    loss = methods["reference_loss"].requests[:2]
    gen = [GenerationRequest(r.prompt_ids, 2, 1.1) for r in methods["multiple_choice"].requests[:2]]
    for eng in (engine, naive):
        eng.loss(loss)
        eng.generate(gen)
        eng.choice_logprobs(methods["multiple_choice_loglik"].requests[:2])


def _match_text(result: dict) -> str:
    if result["scores_match"] is None:
        return f"{result['agreement']:.0%} same"
    return "yes" if result["scores_match"] else "NO"


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"engine vs naive: {report['model']} on {report['device']} ({report['dtype']})"
    )
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
    Console(width=max(140, Console().width)).print(table)


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
