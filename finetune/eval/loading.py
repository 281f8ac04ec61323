"""Load a model directory safely: safetensors only, no remote code, causal LMs only.

Miners upload these files, so nothing in them may run code: pickle-based weight files are
refused outright (loading them can execute arbitrary code), and so is ``trust_remote_code``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from finetune.errors import ModelRejected
from finetune.eval.fixed_tokenizer import is_fixed_tokenizer, load_fixed_tokenizer

logger = logging.getLogger(__name__)

# Weight formats that unpickle on load.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16``; a torch dtype is returned as is.

    Raises:
        ValueError: an unknown dtype name.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(_DTYPES)}") from None


def check_weight_files(model_dir: Path) -> None:
    """Refuse a directory with pickle files, or without safetensors weights.

    Raises:
        ModelRejected: reason ``not_found``, ``pickle_files`` or ``no_safetensors``.
    """
    if not model_dir.is_dir():
        raise ModelRejected(f"model directory {model_dir} does not exist", reason="not_found")
    files = [p for p in model_dir.rglob("*") if p.is_file()]
    pickles = sorted(str(p.relative_to(model_dir)) for p in files if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelRejected(
            f"{model_dir} holds pickle files {pickles}: only safetensors weights are accepted",
            reason="pickle_files",
        )
    if not any(p.suffix == ".safetensors" for p in files):
        raise ModelRejected(f"{model_dir} holds no *.safetensors weights", reason="no_safetensors")


def load_config(model_dir: Path) -> Any:
    """The model's config, checked to be a known causal LM.

    Raises:
        ModelRejected: reason ``bad_config`` (unreadable, or needs remote code) or
            ``not_causal_lm``.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        raise ModelRejected(f"{model_dir}: unreadable config.json ({e})", reason="bad_config") from e
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ModelRejected(
            f"{model_dir}: model type {config.model_type!r} is not a causal language model",
            reason="not_causal_lm",
        )
    return config


def load_tokenizer(
    source: str | Path,
    *,
    fixed: bool | None = None,
    tokenizer_dir: str | Path | None = None,
) -> Any:
    """A model's own tokenizer from its directory, or a competition's fixed tokenizer.

    Never runs remote code.

    Args:
        source: a model directory, or a fixed tokenizer (hub id or folder).
        fixed: load `source` as a fixed tokenizer (`finetune.eval.fixed_tokenizer`); by default
            only the known fixed tokenizer ids (``Xenova/gpt-4``) are.
        tokenizer_dir: where fixed tokenizers are cached (see `fixed_tokenizer_folder`).

    Raises:
        ModelRejected: reason ``bad_tokenizer`` (a model's own tokenizer).
        ConfigError: a fixed tokenizer is missing and cannot be downloaded.
    """
    from transformers import AutoTokenizer

    if fixed is None:
        fixed = is_fixed_tokenizer(source)
    if fixed:
        return load_fixed_tokenizer(source, tokenizer_dir=tokenizer_dir)
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        raise ModelRejected(f"cannot load tokenizer {source}: {e}", reason="bad_tokenizer") from e


def _names(keys: Any, limit: int = 5) -> str:
    keys = sorted(str(k) for k in keys)
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _check_loading_info(info: dict, *, allow_unused: bool) -> None:
    """The evaluated model must be the uploaded one: every weight loaded from the files.

    transformers fills a parameter the files lack with random values and skips a tensor of
    the wrong shape; either way the score would be that of another model (and, being random,
    another on every validator).

    Raises:
        ModelRejected: reason `missing_weights` or `unused_weights`.
    """
    missing = set(info.get("missing_keys") or ())
    mismatched = {str(item[0]) if isinstance(item, tuple) else str(item) for item in info.get("mismatched_keys") or ()}
    if missing or mismatched:
        raise ModelRejected(
            f"the files do not hold the model's weights (missing: {_names(missing) or 'none'}; "
            f"wrong shape: {_names(mismatched) or 'none'}); they would be random",
            reason="missing_weights",
        )
    unexpected = set(info.get("unexpected_keys") or ())
    if unexpected and not allow_unused:
        raise ModelRejected(f"tensors no layer uses: {_names(unexpected)}", reason="unused_weights")


def quiet_library_output() -> None:
    """Turn off what transformers and huggingface_hub print by themselves; call it once, where
    a long-running process (the validator, its scoring child) starts.

    Their progress bars ("Loading weights", "Writing model shards", downloads) and notices
    (the tokenizer's PAD/BOS/EOS alignment, the loading report of missing or unexpected keys,
    which `load_model` itself turns into a rejection with its reason) would interleave with
    the process's own log lines. transformers' errors are kept, and go through the `logging`
    handlers the process configured rather than transformers' own.
    """
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()


def load_model(
    model_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    tokenizer: str | Path | None = None,
    tokenizer_dir: str | Path | None = None,
    allow_unused_weights: bool = False,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer for evaluation.

    Args:
        model_dir: a local snapshot directory.
        device: where to put the model.
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or a torch dtype.
        tokenizer: a fixed tokenizer (hub id or folder) to use instead of the model's own,
            loaded with `finetune.eval.fixed_tokenizer.load_fixed_tokenizer`.
        tokenizer_dir: where fixed tokenizers are cached; offline it must hold them (default:
            the environment variable ``FINETUNE_FIXED_TOKENIZER_DIR``, else the HF cache).
        allow_unused_weights: load a model whose files hold tensors no layer uses (they are
            ignored) instead of rejecting it.

    Returns:
        ``(model, tokenizer)``, the model in eval mode on `device`.

    Raises:
        ModelRejected: the directory is missing, holds pickle files or no safetensors, its
            config is not a causal LM, its files lack weights of the model (which would be
            random: `missing_weights`), hold tensors of the wrong shape or unused ones, or its
            weights or tokenizer cannot be loaded (see `reason`).
        ConfigError: the fixed tokenizer is missing and cannot be downloaded.
        ValueError: an unknown dtype name.
    """
    from transformers import AutoModelForCausalLM

    path = Path(model_dir)
    torch_dtype = resolve_dtype(dtype)
    check_weight_files(path)
    config = load_config(path)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            path,
            config=config,
            dtype=torch_dtype,
            trust_remote_code=False,
            use_safetensors=True,
            output_loading_info=True,
        )
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelRejected(f"{path}: cannot load weights ({e})", reason="bad_weights") from e
    _check_loading_info(info, allow_unused=allow_unused_weights)
    model.to(device)
    model.eval()
    if tokenizer is not None:
        return model, load_fixed_tokenizer(tokenizer, tokenizer_dir=tokenizer_dir)
    return model, load_tokenizer(path, fixed=False)


__all__ = [
    "PICKLE_SUFFIXES",
    "check_weight_files",
    "load_config",
    "load_model",
    "load_tokenizer",
    "quiet_library_output",
    "resolve_dtype",
]
