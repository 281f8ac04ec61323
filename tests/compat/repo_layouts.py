"""Deterministic model repositories for the compatibility goldens (stdlib only).

The golden generators under `scripts/compat/` (run in the reference's venv) and our tests (run in
the project's venv) both import this module, so a golden case can describe a repository in a few
lines of JSON and both sides rebuild the very same bytes.

A *layout* is a JSON-able dict::

    {"seed": 7, "files": [{"path": "config.json", "kind": "config", "family": "llama"}, ...]}

`build_files(layout)` returns `{path: bytes}` in entry order. Every random choice is drawn from
`random.Random(f"{seed}:{path}[:{tensor}]")` (string seeds hash with SHA-512, stable across
Python versions), so the bytes never depend on the interpreter, numpy or torch.

Entry kinds (extra keys in brackets):
- `config` [family, set, drop]: a tiny `config.json` of a model family (see `FAMILIES`).
- `weights` [family, set, dtype, part, norms, patterns, tensors]: a safetensors file holding the
  family's tensors (or the explicit `tensors` list of `[name, shape]`); `part: [k, n]` keeps the
  k-th of n shards; `norms` maps tensor names to a Frobenius norm; `patterns` to `nan`, `inf`,
  `zeros` or `ones`.
- `index` [family, set, parts]: `model.safetensors.index.json` naming the n standard shard files.
- `generation_config`, `special_tokens_map`, `added_tokens`, `tokenizer_json` [words],
  `tokenizer_config` [tokenizer_class, set], `vocab_json`, `merges_txt`, `chat_template`.
- `random` [size]: seeded random bytes; `text` [text]; `json` [value]; `copy` [of]: the same bytes
  as an earlier entry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import struct
from collections.abc import Mapping

TINY = {
    "vocab_size": 64,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}

# Family -> (config fields on top of TINY, tensor-naming scheme).
FAMILIES: dict[str, tuple[dict, str]] = {
    "llama": (
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "rms_norm_eps": 1e-05,
            "tie_word_embeddings": False,
        },
        "llama",
    ),
    "mistral": (
        {
            "architectures": ["MistralForCausalLM"],
            "model_type": "mistral",
            "rms_norm_eps": 1e-05,
            "sliding_window": None,
            "tie_word_embeddings": False,
        },
        "llama",
    ),
    "qwen2": (
        {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "rms_norm_eps": 1e-06,
            "tie_word_embeddings": False,
            "use_sliding_window": False,
        },
        "qwen2",
    ),
    "gemma": (
        {
            "architectures": ["GemmaForCausalLM"],
            "model_type": "gemma",
            "head_dim": 8,
            "rms_norm_eps": 1e-06,
            "tie_word_embeddings": True,
        },
        "llama",
    ),
    "gemma2": (
        {
            "architectures": ["Gemma2ForCausalLM"],
            "model_type": "gemma2",
            "head_dim": 8,
            "query_pre_attn_scalar": 8,
            "sliding_window": 32,
            "rms_norm_eps": 1e-06,
            "tie_word_embeddings": True,
        },
        "gemma2",
    ),
    "gpt2": (
        {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "n_embd": 16,
            "n_layer": 2,
            "n_head": 2,
            "n_positions": 64,
        },
        "gpt2",
    ),
}

SPECIALS = ("<unk>", "<s>", "</s>")
BOS_ID, EOS_ID = 1, 2


def tiny_config(family: str, set_: Mapping | None = None, drop: list | tuple = ()) -> dict:
    """The config dict of a tiny model of `family`, with `set_` applied and `drop` keys removed."""
    fields, _ = FAMILIES[family]
    config = dict(TINY) if family != "gpt2" else {"vocab_size": TINY["vocab_size"]}
    config.update(fields)
    config.update({"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "torch_dtype": "bfloat16"})
    config.update(set_ or {})
    for key in drop:
        config.pop(key, None)
    return config


def family_tensors(family: str, config: Mapping) -> list[tuple[str, list[int]]]:
    """(name, shape) of every tensor a checkpoint of this family holds, sorted by name."""
    scheme = FAMILIES[family][1]
    vocab = config["vocab_size"]
    if scheme == "gpt2":
        hid, layers = config["n_embd"], config["n_layer"]
        out = [("transformer.wte.weight", [vocab, hid])]
        out.append(("transformer.wpe.weight", [config["n_positions"], hid]))
        for i in range(layers):
            pre = f"transformer.h.{i}."
            for ln in ("ln_1", "ln_2"):
                out += [(pre + ln + ".weight", [hid]), (pre + ln + ".bias", [hid])]
            out += [
                (pre + "attn.c_attn.weight", [hid, 3 * hid]),
                (pre + "attn.c_attn.bias", [3 * hid]),
            ]
            out += [(pre + "attn.c_proj.weight", [hid, hid]), (pre + "attn.c_proj.bias", [hid])]
            out += [(pre + "mlp.c_fc.weight", [hid, 4 * hid]), (pre + "mlp.c_fc.bias", [4 * hid])]
            out += [(pre + "mlp.c_proj.weight", [4 * hid, hid]), (pre + "mlp.c_proj.bias", [hid])]
        out += [("transformer.ln_f.weight", [hid]), ("transformer.ln_f.bias", [hid])]
        return sorted(out)
    hid, inter = config["hidden_size"], config["intermediate_size"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hid // heads
    out = [("model.embed_tokens.weight", [vocab, hid]), ("model.norm.weight", [hid])]
    for i in range(config["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        out += [
            (pre + "input_layernorm.weight", [hid]),
            (pre + "post_attention_layernorm.weight", [hid]),
        ]
        if scheme == "gemma2":
            out += [
                (pre + "pre_feedforward_layernorm.weight", [hid]),
                (pre + "post_feedforward_layernorm.weight", [hid]),
            ]
        out += [
            (pre + "self_attn.q_proj.weight", [heads * head_dim, hid]),
            (pre + "self_attn.k_proj.weight", [kv * head_dim, hid]),
            (pre + "self_attn.v_proj.weight", [kv * head_dim, hid]),
            (pre + "self_attn.o_proj.weight", [hid, heads * head_dim]),
            (pre + "mlp.gate_proj.weight", [inter, hid]),
            (pre + "mlp.up_proj.weight", [inter, hid]),
            (pre + "mlp.down_proj.weight", [hid, inter]),
        ]
        if scheme == "qwen2":
            out += [
                (pre + "self_attn.q_proj.bias", [heads * head_dim]),
                (pre + "self_attn.k_proj.bias", [kv * head_dim]),
                (pre + "self_attn.v_proj.bias", [kv * head_dim]),
            ]
    if not config.get("tie_word_embeddings", True):
        out.append(("lm_head.weight", [vocab, hid]))
    return sorted(out)


# -- number encodings -------------------------------------------------------------------------
def _f32_bits(value: float) -> int:
    if math.isnan(value):
        return 0x7FC00000
    if math.isinf(value) or abs(value) > 3.4028234663852886e38:
        return 0x7F800000 if value > 0 else 0xFF800000
    return struct.unpack("<I", struct.pack("<f", value))[0]


def bf16_bits(value: float) -> int:
    """bfloat16 bits of `value`: round to nearest even from float32 (NaN -> 0x7FC0)."""
    if math.isnan(value):
        return 0x7FC0
    bits = _f32_bits(value)
    if (bits & 0x7F800000) == 0x7F800000:  # inf stays inf
        return bits >> 16
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def bf16_value(value: float) -> float:
    """`value` rounded to bfloat16 (as a Python float)."""
    return struct.unpack("<f", struct.pack("<I", bf16_bits(value) << 16))[0]


def encode(values: list[float], dtype: str) -> bytes:
    if dtype == "BF16":
        return struct.pack(f"<{len(values)}H", *(bf16_bits(v) for v in values))
    if dtype == "F32":
        return struct.pack(f"<{len(values)}I", *(_f32_bits(v) for v in values))
    raise ValueError(f"unsupported dtype {dtype}")


def decode(data: bytes, dtype: str) -> list[float]:
    if dtype == "BF16":
        words = struct.unpack(f"<{len(data) // 2}H", data)
        return [struct.unpack("<f", struct.pack("<I", w << 16))[0] for w in words]
    if dtype == "F32":
        return list(struct.unpack(f"<{len(data) // 4}f", data))
    raise ValueError(f"unsupported dtype {dtype}")


def exact_norm(values: list[float]) -> float:
    """Frobenius norm of the stored values, summed with `math.fsum` (correctly rounded sum)."""
    return math.sqrt(math.fsum(v * v for v in values))


# -- tensors ----------------------------------------------------------------------------------
def _is_norm_weight(name: str) -> bool:
    return "norm" in name or ".ln_" in name


def tensor_values(
    seed_key: str, name: str, shape: list[int], norm: float | None, pattern: str | None
) -> list[float]:
    """Values of one tensor: layer-norm weights are ones, others uniform in [-1, 1) scaled to
    Frobenius norm `norm` (default 0.02 per element's worth: 0.02 * sqrt(numel))."""
    count = math.prod(shape)
    if pattern == "zeros":
        return [0.0] * count
    if pattern == "ones" or (pattern is None and norm is None and _is_norm_weight(name)):
        return [1.0] * count
    if pattern == "nan":
        return [math.nan] * count
    rng = random.Random(f"{seed_key}:{name}")
    values = [rng.random() * 2.0 - 1.0 for _ in range(count)]
    target = 0.02 * math.sqrt(count) if norm is None else float(norm)
    scale = target / math.sqrt(math.fsum(v * v for v in values))
    values = [v * scale for v in values]
    if pattern == "inf":
        values[0] = math.inf
    return values


def safetensors_bytes(tensors: list[tuple[str, str, list[int], bytes]]) -> bytes:
    """A safetensors file: u64 header length, JSON header (space-padded to 8), data in order."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors)


def shard_name(k: int, n: int) -> str:
    return f"model-{k:05d}-of-{n:05d}.safetensors"


def _shard_of(index: int, parts: int) -> int:
    return index % parts + 1


def _weights(layout_seed: int, entry: Mapping) -> bytes:
    family = entry.get("family", "llama")
    if entry.get("tensors") is not None:
        listing = sorted((name, list(shape)) for name, shape in entry["tensors"])
    else:
        listing = family_tensors(family, tiny_config(family, entry.get("set")))
    dtype = entry.get("dtype", "BF16")
    norms = entry.get("norms", {})
    patterns = entry.get("patterns", {})
    part = entry.get("part")
    seed_key = f"{layout_seed}:{entry.get('values_key', 'weights')}"
    out = []
    for i, (name, shape) in enumerate(listing):
        if part is not None and _shard_of(i, part[1]) != part[0]:
            continue
        values = tensor_values(seed_key, name, shape, norms.get(name), patterns.get(name))
        out.append((name, dtype, shape, encode(values, dtype)))
    return safetensors_bytes(out)


def _index(entry: Mapping) -> bytes:
    family = entry.get("family", "llama")
    listing = family_tensors(family, tiny_config(family, entry.get("set")))
    parts = entry.get("parts", 2)
    dtype_size = 2 if entry.get("dtype", "BF16") == "BF16" else 4
    total = sum(math.prod(shape) * dtype_size for _, shape in listing)
    weight_map = {
        name: shard_name(_shard_of(i, parts), parts) for i, (name, _) in enumerate(listing)
    }
    return _json({"metadata": {"total_size": total}, "weight_map": weight_map})


# -- tokenizer files --------------------------------------------------------------------------
def vocab(size: int = TINY["vocab_size"]) -> dict[str, int]:
    words = list(SPECIALS) + [f"w{i}" for i in range(len(SPECIALS), size)]
    return {w: i for i, w in enumerate(words)}


def tokenizer_json() -> dict:
    specials = [
        {
            "id": i,
            "content": tok,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, tok in enumerate(SPECIALS)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": specials,
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab(), "unk_token": "<unk>"},
    }


def _json(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _random_bytes(key: str, size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{key}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def build_file(layout_seed: int, entry: Mapping, built: Mapping[str, bytes]) -> bytes:
    """The bytes of one layout entry (`built` holds the entries before it, for `copy`)."""
    kind, path = entry["kind"], entry["path"]
    if kind == "config":
        return _json(
            tiny_config(entry.get("family", "llama"), entry.get("set"), entry.get("drop", ()))
        )
    if kind == "weights":
        return _weights(layout_seed, entry)
    if kind == "index":
        return _index(entry)
    if kind == "generation_config":
        return _json({"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, **entry.get("set", {})})
    if kind == "special_tokens_map":
        return _json({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    if kind == "added_tokens":
        return _json(entry.get("value", {}))
    if kind == "tokenizer_json":
        return _json(tokenizer_json())
    if kind == "tokenizer_config":
        config = {
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "model_max_length": 64,
        }
        if entry.get("tokenizer_class"):
            config["tokenizer_class"] = entry["tokenizer_class"]
        config.update(entry.get("set", {}))
        return _json(config)
    if kind == "vocab_json":
        return _json(vocab())
    if kind == "merges_txt":
        return b"#version: 0.2\n"
    if kind == "chat_template":
        return b"{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    if kind == "random":
        return _random_bytes(f"{layout_seed}:{path}", int(entry.get("size", 64)))
    if kind == "text":
        return entry["text"].encode()
    if kind == "json":
        return _json(entry["value"])
    if kind == "copy":
        return built[entry["of"]]
    raise ValueError(f"unknown entry kind {kind!r}")


def build_files(layout: Mapping) -> dict[str, bytes]:
    """Every file of a layout: path -> bytes, in entry order."""
    built: dict[str, bytes] = {}
    for entry in layout["files"]:
        built[entry["path"]] = build_file(layout["seed"], entry, built)
    return built


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def walk_order(paths: list[str]) -> list[str]:
    """Paths in the order of a top-down `os.walk` with sorted folders and sorted file names:
    a folder's own files first, then each sub-folder in name order."""

    def key(path: str) -> tuple:
        parts = path.split("/")
        # Files sort before sub-folders at each level: (folder names..., (0, file)).
        return tuple((1, p) for p in parts[:-1]) + ((0, parts[-1]),)

    return sorted(paths, key=key)


def snapshot_hash(files: Mapping[str, bytes]) -> str:
    """The reference's directory hash of a snapshot holding exactly `files`:
    base64(SHA-256 of the concatenated base64(SHA-256(file)) strings, in `walk_order`)."""
    outer = hashlib.sha256()
    for path in walk_order(list(files)):
        outer.update(b64_sha256(files[path]).encode())
    return base64.b64encode(outer.digest()).decode()


__all__ = [
    "FAMILIES",
    "TINY",
    "bf16_bits",
    "bf16_value",
    "build_file",
    "build_files",
    "decode",
    "encode",
    "exact_norm",
    "family_tensors",
    "safetensors_bytes",
    "shard_name",
    "snapshot_hash",
    "tensor_values",
    "tiny_config",
    "tokenizer_json",
    "vocab",
    "walk_order",
]
