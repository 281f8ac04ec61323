"""Build a small causal LM with its own BPE tokenizer and chat template, fully offline.

Tests, the demo and the benchmarks use it. Deterministic for a given seed and architecture.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

SPECIAL_TOKENS = ("<|pad|>", "<|im_start|>", "<|im_end|>")
# ChatML-style: one turn per message, the assistant header when a generation prompt is asked.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

ARCHITECTURES = ("llama", "qwen2", "mistral", "phi3", "gpt_neox")
_DATA_DIR = Path(__file__).parent / "datasets" / "data"


def _corpus() -> list[str]:
    """Training text for the tokenizer: the bundled offline samples plus plain ASCII."""
    lines = [string.ascii_letters, string.digits, string.punctuation, "( ) [ ] { } < >"]
    lines += [" ".join(str(i) for i in range(0, 1000, 7))]
    if _DATA_DIR.is_dir():
        for path in sorted(_DATA_DIR.rglob("*")):
            if path.suffix in {".txt", ".jsonl"} and path.is_file():
                lines.extend(path.read_text(encoding="utf-8").splitlines())
    return lines


def build_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE tokenizer with pad/chat special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _config(arch: str, vocab_size: int, *, hidden: int, layers: int, tokenizer):
    from transformers import AutoConfig

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=hidden * 2,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
    )
    if arch in {"llama", "qwen2", "mistral", "phi3"}:
        common["num_key_value_heads"] = 2
    if arch == "gpt_neox":
        common["rotary_pct"] = 1.0
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return AutoConfig.for_model(arch, **common)


def build_tiny_model(
    out_dir: str | Path,
    *,
    seed: int = 0,
    arch: str = "llama",
    hidden: int = 64,
    layers: int = 2,
    vocab_size: int = 1024,
) -> Path:
    """Write a random-initialised model, tokenizer and generation config to `out_dir`.

    Returns:
        The output directory.

    Raises:
        ValueError: unknown architecture.
    """
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size)
    config = _config(arch, len(tokenizer), hidden=hidden, layers=layers, tokenizer=tokenizer)
    # A local seed: never touch the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "tiny_model.json").write_text(json.dumps({"seed": seed, "arch": arch}) + "\n")
    return out
