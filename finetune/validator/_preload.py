"""What the fork server imports once, so that each check and scoring child starts warm.

A child forked from the server inherits these modules; without them, every child would spend
~2 s importing a model class (transformers loads them lazily) before looking at one file.
"""

from __future__ import annotations

import importlib

import torch  # noqa: F401
import transformers  # noqa: F401
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401

import finetune.eval  # noqa: F401
import finetune.storage  # noqa: F401

# The model families the competitions allow; an unknown one is simply imported by its child.
_MODEL_MODULES = ("llama", "mistral", "qwen2", "phi3", "phi", "gemma", "gemma2", "gpt_neox", "falcon")
for _name in _MODEL_MODULES:
    try:
        importlib.import_module(f"transformers.models.{_name}.modeling_{_name}")
    except ImportError:  # not in this transformers version
        pass
