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

from dataclasses import dataclass
from pathlib import Path

from finetune.errors import ModelRejected


@dataclass(frozen=True)
class ImpliedShape:
    """What `config.json` implies.

    Attributes:
        parameters: distinct parameters (tied weights once), as `model.parameters()` counts.
        optional_elements: elements files may hold besides those: tied copies and buffers.
    """

    parameters: int
    optional_elements: int


def implied_shape(model_dir: str | Path) -> ImpliedShape:
    """Build the model `config.json` describes on the meta device and measure it.

    Raises:
        ModelRejected: reason `bad_config` (the config cannot build a causal LM without
            remote code).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, RecursionError) as exc:
        raise ModelRejected(
            f"config.json does not describe a model transformers can build: {str(exc)[:200]}",
            reason="bad_config",
        ) from None
    distinct = {id(p): p.numel() for p in model.parameters()}
    every_name = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    buffers = sum(b.numel() for name, b in model.state_dict().items() if name not in
                  dict(model.named_parameters(remove_duplicate=False)))
    parameters = sum(distinct.values())
    return ImpliedShape(parameters=parameters, optional_elements=every_name - parameters + buffers)


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


__all__ = ["ImpliedShape", "check_stored_elements", "implied_shape"]
