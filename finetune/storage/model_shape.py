"""The model a config describes, against the weights the files hold.

`transformers` builds the model from `config.json` and fills it with whatever tensors the
safetensors files hold; a parameter the files lack is silently random-initialised. So the
checks count the parameters the *config* implies (what the evaluated model has, and what
`model.parameters()` counts) and compare them with the elements stored:

- stored < implied: weights are missing, and the model evaluated would be partly random
  (a config declaring 270M parameters with one 2x2 tensor in its file is a random 270M model);
- stored > implied + allowed extras: tensors no layer uses (they would inflate a count taken
  from the headers, as an unused 3M-element tensor would against `min_params`).

Allowed extras are the second copy of tied weights (an output head saved beside the input
embedding it is tied to) and persistent buffers. The model is built on the meta device:
no memory is allocated for its weights.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from finetune.errors import ModelRejected

# The reference's norm rule reads these weights of every layer of `model.model.layers`, in
# this order (taoverse ModelUpdater._validate_parameters): attention, then MLP, no gate.
REFERENCE_NORM_PROJECTIONS = (
    ("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
    ("mlp", ("up_proj", "down_proj")),
)


@dataclass(frozen=True)
class NormWalk:
    """What the reference's norm rule reads of a model, worked out on its empty shell.

    Attributes:
        layers: decoder layers walked (`len(model.model.layers)`).
        weights: (projection type, names of the parameter) per weight read, in reading
            order; the rule reads each weight by the first of its names a file holds.
        error: set when the walk cannot finish (an attribute the layout lacks, as the
            reference's walk fails), after reading `weights`.
    """

    layers: int
    weights: tuple[tuple[str, tuple[str, ...]], ...]
    error: str | None = None


# How C++ code reports a failed allocation (under the check's memory limit): the config asks
# for more than the check may use, which is not the same verdict as a config that is wrong.
_ALLOCATION_FAILURES = ("bad_alloc", "out of memory", "can't allocate memory", "cannot allocate memory")


@dataclass(frozen=True)
class ImpliedShape:
    """What `config.json` implies.

    Attributes:
        parameters: distinct parameters (tied weights once), as `model.parameters()` counts.
        optional_elements: elements files may hold besides those: tied copies and buffers.
        model_class: the class transformers builds from `model_type` (e.g. LlamaForCausalLM).
        norm_walk: what the reference's norm rule reads of this model.
    """

    parameters: int
    optional_elements: int
    model_class: str = ""
    norm_walk: NormWalk = field(default_factory=lambda: NormWalk(0, ()))


def _names_by_tensor(model) -> dict[int, tuple[str, ...]]:
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return {key: tuple(value) for key, value in names.items()}


def _norm_walk(model) -> NormWalk:
    """Walk the model as the reference's rule does: `model.model.layers`, then per layer the
    projections of `REFERENCE_NORM_PROJECTIONS`; stop where an attribute is missing."""
    names = _names_by_tensor(model)
    weights: list[tuple[str, tuple[str, ...]]] = []
    try:
        layers = list(model.model.layers)
        for layer in layers:
            for owner, projections in REFERENCE_NORM_PROJECTIONS:
                for projection in projections:
                    weight = getattr(getattr(layer, owner), projection).weight
                    weights.append((projection, names.get(id(weight), ())))
    except (AttributeError, TypeError) as exc:
        return NormWalk(len(weights) // 6, tuple(weights), f"{type(exc).__name__}: {exc}"[:200])
    return NormWalk(len(layers), tuple(weights))


def implied_shape(model_dir: str | Path) -> ImpliedShape:
    """Build the model `config.json` describes on the meta device and measure it.

    Remembers the last few results per config.json (path, size, modification time): a check
    asks for the same model's shape more than once, and an 8B shell takes about a second.

    Raises:
        ModelRejected: reason `bad_config` (the config cannot build a causal LM without
            remote code).
    """
    config = Path(model_dir) / "config.json"
    try:
        stat = config.stat()
    except OSError:
        stat = None
    key = (str(config.resolve()), stat.st_size, stat.st_mtime_ns) if stat else (str(config), -1, -1)
    return _implied_shape(str(model_dir), key)


@functools.lru_cache(maxsize=4)
def _implied_shape(model_dir: str, key: tuple) -> ImpliedShape:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a config can make transformers raise anything
        # (found by fuzzing: an out-of-range pad_token_id trips an AssertionError in nn.Embedding)
        if isinstance(exc, SystemError) or any(marker in str(exc).lower() for marker in _ALLOCATION_FAILURES):
            raise MemoryError(f"building the model config.json describes ran out of memory ({exc})") from None
        raise ModelRejected(
            f"config.json does not describe a model transformers can build: {str(exc)[:200]}",
            reason="bad_config",
        ) from None
    distinct = {id(p): p.numel() for p in model.parameters()}
    every_name = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    buffers = sum(b.numel() for name, b in model.state_dict().items() if name not in
                  dict(model.named_parameters(remove_duplicate=False)))
    parameters = sum(distinct.values())
    return ImpliedShape(
        parameters=parameters,
        optional_elements=every_name - parameters + buffers,
        model_class=type(model).__name__,
        norm_walk=_norm_walk(model),
    )


def check_stored_elements(stored: int, shape: ImpliedShape, *, reject_unused: bool = True) -> None:
    """Compare the elements stored in the safetensors files with what the config implies.

    Args:
        stored: elements over every tensor of every shard.
        shape: from `implied_shape`.
        reject_unused: whether tensors beyond the model's own (and its allowed extras) reject.

    Raises:
        ModelRejected: reason `missing_weights` or `unused_weights`.
    """
    if stored < shape.parameters:
        raise ModelRejected(
            f"the files hold {stored:,} weight elements but config.json describes a model of "
            f"{shape.parameters:,} parameters: the missing ones would be random",
            reason="missing_weights",
            stored=stored,
            parameters=shape.parameters,
        )
    if reject_unused and stored > shape.parameters + shape.optional_elements:
        raise ModelRejected(
            f"the files hold {stored:,} weight elements, more than the {shape.parameters:,} "
            f"parameters config.json describes (plus {shape.optional_elements:,} tied or buffer "
            "elements): some tensors belong to no layer",
            reason="unused_weights",
            stored=stored,
            parameters=shape.parameters,
        )


__all__ = [
    "REFERENCE_NORM_PROJECTIONS",
    "ImpliedShape",
    "NormWalk",
    "check_stored_elements",
    "implied_shape",
]
