"""Golden cases for the content hash: which files the reference's download hashes, and the hash.

Each case is a repository layout (`tests/compat/repo_layouts.py` rebuilds its bytes from the
inline description). The script serves every layout from the loopback fake Hub
(`tests/storage/fake_hub.py`), runs the reference's own `HuggingFaceModelStore.download_model`
(taoverse: `AutoModel.from_pretrained` + `AutoTokenizer.from_pretrained` into a fresh cache,
symlinks realised, directory hashed) and records what was left in the snapshot folder, the hash
the reference computed, the classes it loaded, the files it asked the Hub for, or the error it
raised. Nothing of the reference is copied here: it is imported from the paths given.

Run it with a Python where the reference imports (transformers 4.48.3, huggingface_hub 0.28.1):

    /work/scratch/ref-venv/bin/python scripts/compat/golden_hash.py \
        --reference /work/scratch/ref/finetuning --taoverse /work/scratch/ref/taoverse

Writes tests/compat/golden/hash/layouts.json (deterministic; `--check` compares instead).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.compat import repo_layouts as rl  # noqa: E402
from tests.storage.fake_hub import FakeHub  # noqa: E402

OUT = ROOT / "tests" / "compat" / "golden" / "hash" / "layouts.json"


def _f(path: str, kind: str, **extra) -> dict:
    return {"path": path, "kind": kind, **extra}


BASE = [
    _f("config.json", "config", family="llama"),
    _f("model.safetensors", "weights", family="llama"),
    _f("generation_config.json", "generation_config"),
    _f("tokenizer.json", "tokenizer_json"),
    _f("tokenizer_config.json", "tokenizer_config"),
    _f("special_tokens_map.json", "special_tokens_map"),
]


def _with(base: list[dict], *extra: dict, drop: tuple[str, ...] = ()) -> list[dict]:
    kept = [e for e in base if e["path"] not in drop]
    paths = {e["path"] for e in extra}
    return [e for e in kept if e["path"] not in paths] + list(extra)


def _sharded(parts: int, family: str = "llama") -> list[dict]:
    shards = [
        _f(rl.shard_name(k, parts), "weights", family=family, part=[k, parts])
        for k in range(1, parts + 1)
    ]
    return [_f("model.safetensors.index.json", "index", family=family, parts=parts), *shards]


def layouts() -> list[dict]:
    """The repository layouts, each with a name, a seed and its files."""
    cases: list[tuple[str, list[dict]]] = [
        ("llama-base", BASE),
        (
            "llama-readme-gitattributes-license",
            _with(
                BASE,
                _f(
                    ".gitattributes",
                    "text",
                    text="*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
                ),
                _f("README.md", "random", size=300),
                _f("LICENSE", "text", text="MIT\n"),
            ),
        ),
        ("llama-no-generation-config", _with(BASE, drop=("generation_config.json",))),
        ("llama-chat-template-jinja", _with(BASE, _f("chat_template.jinja", "chat_template"))),
        (
            "llama-chat-template-json",
            _with(
                BASE, _f("chat_template.json", "json", value={"chat_template": "{{ messages }}"})
            ),
        ),
        ("llama-added-tokens", _with(BASE, _f("added_tokens.json", "added_tokens", value={}))),
        (
            "llama-pickles-and-extras",
            _with(
                BASE,
                _f("pytorch_model.bin", "random", size=512),
                _f("training_args.bin", "random", size=64),
                _f("model.py", "text", text="print('hi')\n"),
                _f("vocab.txt", "text", text="a\nb\n"),
                _f("merges.txt", "merges_txt"),
                _f("vocab.json", "vocab_json"),
                _f("Tokenizer.json", "tokenizer_json"),
            ),
        ),
        (
            "llama-subfolders",
            _with(
                BASE,
                _f("original/params.json", "json", value={"dim": 16}),
                _f("original/consolidated.00.pth", "random", size=128),
                _f("checkpoint-1/config.json", "config", family="llama"),
                _f("checkpoint-1/model.safetensors", "weights", family="llama"),
                _f("tokenizer/tokenizer_config.json", "tokenizer_config"),
            ),
        ),
        ("llama-sharded-2", _with(BASE, *_sharded(2), drop=("model.safetensors",))),
        ("llama-sharded-3", _with(BASE, *_sharded(3), drop=("model.safetensors",))),
        ("llama-single-and-sharded", _with(BASE, *_sharded(2))),
        (
            "llama-single-and-stale-index",
            _with(BASE, _f("model.safetensors.index.json", "index", family="llama", parts=4)),
        ),
        (
            "llama-sharded-missing-shard",
            [
                e
                for e in _with(BASE, *_sharded(3), drop=("model.safetensors",))
                if e["path"] != rl.shard_name(2, 3)
            ],
        ),
        (
            "llama-no-weights-only-bin",
            _with(BASE, _f("pytorch_model.bin", "random", size=256), drop=("model.safetensors",)),
        ),
        (
            "llama-f32-weights",
            _with(BASE, _f("model.safetensors", "weights", family="llama", dtype="F32")),
        ),
        (
            "llama-class-fast-explicit",
            _with(
                BASE,
                _f(
                    "tokenizer_config.json",
                    "tokenizer_config",
                    tokenizer_class="LlamaTokenizerFast",
                ),
                _f("tokenizer.model", "random", size=200),
            ),
        ),
        (
            "llama-class-slow-name",
            _with(
                BASE,
                _f("tokenizer_config.json", "tokenizer_config", tokenizer_class="LlamaTokenizer"),
                _f("tokenizer.model", "random", size=200),
            ),
        ),
        (
            "llama-class-pretrained-fast",
            _with(
                BASE,
                _f(
                    "tokenizer_config.json",
                    "tokenizer_config",
                    tokenizer_class="PreTrainedTokenizerFast",
                ),
                _f("tokenizer.model", "random", size=200),
                _f("vocab.json", "vocab_json"),
            ),
        ),
        (
            "llama-class-gpt2-fast",
            _with(
                BASE,
                _f(
                    "tokenizer_config.json", "tokenizer_config", tokenizer_class="GPT2TokenizerFast"
                ),
                _f("vocab.json", "vocab_json"),
                _f("merges.txt", "merges_txt"),
                _f("tokenizer.model", "random", size=200),
            ),
        ),
        (
            "llama-class-qwen2-slow-name",
            _with(
                BASE,
                _f("tokenizer_config.json", "tokenizer_config", tokenizer_class="Qwen2Tokenizer"),
                _f("vocab.json", "vocab_json"),
                _f("merges.txt", "merges_txt"),
            ),
        ),
        (
            "llama-class-tokenizers-backend",
            _with(
                BASE,
                _f(
                    "tokenizer_config.json", "tokenizer_config", tokenizer_class="TokenizersBackend"
                ),
                _f("chat_template.jinja", "chat_template"),
            ),
        ),
        (
            "llama-class-unknown-name",
            _with(
                BASE,
                _f("tokenizer_config.json", "tokenizer_config", tokenizer_class="NoSuchTokenizer"),
            ),
        ),
        (
            "llama-no-tokenizer-files",
            _with(
                BASE, drop=("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
            ),
        ),
        (
            "llama-tokenizer-json-only",
            _with(BASE, drop=("tokenizer_config.json", "special_tokens_map.json")),
        ),
        (
            "llama-tokenizer-config-only",
            _with(BASE, drop=("tokenizer.json", "special_tokens_map.json")),
        ),
        (
            "llama-tokenizer-model-only-invalid",
            _with(
                BASE,
                _f("tokenizer.model", "random", size=200),
                drop=("tokenizer.json",),
            ),
        ),
        ("llama-tokenizer-json-invalid", _with(BASE, _f("tokenizer.json", "random", size=100))),
        (
            "llama-tokenizer-config-invalid-json",
            _with(BASE, _f("tokenizer_config.json", "text", text="{not json")),
        ),
        (
            "llama-versioned-tokenizer-file-old",
            _with(
                BASE,
                _f(
                    "tokenizer_config.json",
                    "tokenizer_config",
                    set={"fast_tokenizer_files": ["tokenizer.4.0.json"]},
                ),
                _f("tokenizer.4.0.json", "tokenizer_json"),
            ),
        ),
        (
            "llama-versioned-tokenizer-file-future",
            _with(
                BASE,
                _f(
                    "tokenizer_config.json",
                    "tokenizer_config",
                    set={"fast_tokenizer_files": ["tokenizer.9.0.json"]},
                ),
                _f("tokenizer.9.0.json", "tokenizer_json"),
            ),
        ),
        (
            "llama-duplicate-file-contents",
            _with(
                BASE,
                _f("added_tokens.json", "text", text="{}\n"),
                _f("chat_template.jinja", "text", text="{}\n"),
            ),
        ),
        (
            "llama-config-auto-map",
            _with(
                BASE,
                _f(
                    "config.json",
                    "config",
                    family="llama",
                    set={"auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}},
                ),
                _f("modeling_x.py", "text", text="raise SystemExit\n"),
            ),
        ),
        (
            "llama-no-architectures",
            _with(BASE, _f("config.json", "config", family="llama", drop=["architectures"])),
        ),
        ("llama-no-config", _with(BASE, drop=("config.json",))),
        ("llama-config-invalid-json", _with(BASE, _f("config.json", "text", text="{oops"))),
        (
            "llama-config-unknown-model-type",
            _with(
                BASE,
                _f("config.json", "config", family="llama", set={"model_type": "no_such_type"}),
            ),
        ),
        (
            "mistral-from-model-type",
            [
                _f("config.json", "config", family="mistral"),
                _f("model.safetensors", "weights", family="mistral"),
                _f("tokenizer.json", "tokenizer_json"),
                _f("tokenizer_config.json", "tokenizer_config"),
                _f("tokenizer.model", "random", size=150),
            ],
        ),
        (
            "qwen2-from-model-type",
            [
                _f("config.json", "config", family="qwen2"),
                _f("model.safetensors", "weights", family="qwen2"),
                _f("generation_config.json", "generation_config"),
                _f("tokenizer.json", "tokenizer_json"),
                _f("tokenizer_config.json", "tokenizer_config"),
                _f("vocab.json", "vocab_json"),
                _f("merges.txt", "merges_txt"),
                _f("tokenizer.model", "random", size=150),
            ],
        ),
        (
            "gemma-from-model-type",
            [
                _f("config.json", "config", family="gemma"),
                _f("model.safetensors", "weights", family="gemma"),
                _f("tokenizer.json", "tokenizer_json"),
                _f("tokenizer_config.json", "tokenizer_config"),
                _f("tokenizer.model", "random", size=150),
                _f("special_tokens_map.json", "special_tokens_map"),
            ],
        ),
        (
            "gpt2-vocab-merges-only",
            [
                _f("config.json", "config", family="gpt2"),
                _f("model.safetensors", "weights", family="gpt2"),
                _f("vocab.json", "vocab_json"),
                _f("merges.txt", "merges_txt"),
                _f("tokenizer_config.json", "tokenizer_config"),
            ],
        ),
        (
            "gpt2-sharded-tokenizer-json",
            [
                _f("config.json", "config", family="gpt2"),
                *_sharded(2, family="gpt2"),
                _f("tokenizer.json", "tokenizer_json"),
                _f("special_tokens_map.json", "special_tokens_map"),
                _f("generation_config.json", "generation_config"),
            ],
        ),
    ]
    return [{"name": name, "seed": i + 1, "files": files} for i, (name, files) in enumerate(cases)]


def _load_reference(reference: Path, taoverse: Path):
    """Import the reference's download path from the given checkouts (taoverse's `src` first)."""
    sys.path.insert(0, str(taoverse / "src"))
    sys.path.insert(0, str(reference))
    import nltk

    nltk.download = lambda *a, **k: True  # the reference downloads NLTK data at import time
    sys.modules.setdefault("wandb", types.ModuleType("wandb"))  # imported, never used here
    import huggingface_hub
    import transformers
    from taoverse.model.data import ModelId
    from taoverse.model.storage.hugging_face.hugging_face_model_store import (
        HuggingFaceModelStore,
    )

    import constants

    versions = {
        "transformers": transformers.__version__,
        "huggingface_hub": huggingface_hub.__version__,
        "spec_version": constants.__spec_version__,
    }
    return constants, ModelId, HuggingFaceModelStore, versions


def _clean(text: str, *replace: tuple[str, str]) -> str:
    for old, new in replace:
        text = text.replace(old, new)
    return text.splitlines()[0][:300] if text else ""


def _walk(snapshot: Path) -> list[str]:
    found = []
    for cur, dirs, names in os.walk(snapshot):
        dirs.sort()
        for name in sorted(names):
            found.append(os.path.relpath(os.path.join(cur, name), snapshot))
    return found


def run_case(hub, layout: dict, store, model_id_cls, constraints) -> dict:
    files = rl.build_files(layout)
    namespace, name = "golden", layout["name"]
    commit = hub.add_commit(f"{namespace}/{name}", files)
    hub.requests.clear()
    cache = Path(tempfile.mkdtemp(prefix="golden-hash-"))
    model_id = model_id_cls(namespace=namespace, name=name, competition_id=3, commit=commit)
    result: dict = {"name": name, "seed": layout["seed"], "files": layout["files"]}
    try:
        model = asyncio.run(store.download_model(model_id, str(cache), constraints))
        result["outcome"] = "ok"
        result["hash"] = model.id.hash
        result["model_class"] = type(model.pt_model).__name__
        result["tokenizer_class"] = type(model.tokenizer).__name__ if model.tokenizer else None
    except Exception as exc:  # the reference's failure is the golden value
        result["outcome"] = "error"
        result["error"] = {
            "type": type(exc).__name__,
            "message": _clean(
                str(exc), (str(cache), "<cache>"), (hub.url, "<hub>"), (commit, "<commit>")
            ),
        }
    snapshot = cache / f"models--{namespace}--{name}" / "snapshots" / commit
    result["hashed_files"] = _walk(snapshot) if snapshot.is_dir() else []
    asked = []
    for method, path in hub.requests:
        prefix = f"/{namespace}/{name}/resolve/{commit}/"
        if method == "HEAD" and path.startswith(prefix) and path[len(prefix) :] not in asked:
            asked.append(path[len(prefix) :])
    result["asked"] = asked
    if result["outcome"] == "ok":
        ours = rl.snapshot_hash({p: files[p] for p in result["hashed_files"]})
        if ours != result["hash"]:
            raise AssertionError(f"{name}: repo_layouts.snapshot_hash disagrees with the reference")
        for path in result["hashed_files"]:
            if (snapshot / path).read_bytes() != files[path]:
                raise AssertionError(f"{name}: downloaded {path} differs from the layout's bytes")
    shutil.rmtree(cache, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="finetuning checkout")
    parser.add_argument("--taoverse", type=Path, required=True, help="taoverse checkout")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="compare with --out, write nothing")
    args = parser.parse_args()

    with FakeHub() as hub:
        home = tempfile.mkdtemp(prefix="golden-hf-home-")
        os.environ.update(
            HF_ENDPOINT=hub.url,
            HF_HOME=home,
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            TRANSFORMERS_VERBOSITY="error",
        )
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ACCESS_TOKEN", "HF_TOKEN"):
            os.environ.pop(var, None)
        constants, model_id_cls, store_cls, versions = _load_reference(
            args.reference, args.taoverse
        )
        constraints = constants.MODEL_CONSTRAINTS_BY_COMPETITION_ID[3]  # INSTRUCT_8B: bf16, 20 GiB
        store = store_cls()
        cases = [run_case(hub, layout, store, model_id_cls, constraints) for layout in layouts()]
        shutil.rmtree(home, ignore_errors=True)

    doc = {
        "about": "Reference content-hash file set: HuggingFaceModelStore.download_model on a "
        "loopback Hub; rebuild files with tests/compat/repo_layouts.build_files(case).",
        "reference": versions,
        "constraints": "INSTRUCT_8B (torch_dtype bfloat16)",
        "cases": cases,
    }
    text = json.dumps(doc, separators=(",", ":"), sort_keys=False) + "\n"
    if args.check:
        same = args.out.read_text() == text
        print("hash goldens:", "unchanged" if same else "DIFFER")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    ok = sum(c["outcome"] == "ok" for c in cases)
    print(f"wrote {args.out} ({len(cases)} layouts, {ok} downloaded, {len(cases) - ok} errors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
