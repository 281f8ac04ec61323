"""Scoring protocols: every rule that decides a sample, a score, a verdict or a weight, and
differs between the reference subnet and this project (SPEC §0).

A validator earns its dividends by agreeing with the other validators of its subnet, and on
subnet 37 those run the reference implementation (macrocosm-os/finetuning 3.1.0 @ afd44037e9a1,
taoverse @ e350d5e40a29). So, like a blockchain client with its forks, the project implements
protocols, and the schedule names the one in force per period:

- `REFERENCE_31` reproduces the reference exactly (the mainnet schedule);
- `NEXT` carries this project's improvements (the local schedule; a future mainnet period could
  switch to it at a block).

Each protocol is one frozen record made of small per-concern records (`data`, `eval`, `checks`,
`hashing`, `weights`); each package receives only its own part and follows it, and never asks
which protocol is in force. Everything that differs is a field here, with what the reference
does and what we do instead, so this file reads as the list of differences (the table in
docs/compatibility.md explains each one). What does not change a sample, score, verdict or
weight (deadlines, timeouts, atomic state, never running miner code, safetensors only) holds in
both protocols and is not here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataRules(_Frozen):
    """How loaders draw rows from the round's seed (SPEC §6-7).

    Attributes:
        draws: ``reference``: the sequence of draws the reference makes on the global RNG
            seeded with the round seed (every loader reseeds with the same seed), its page
            arithmetic, config table, request parameters, redraw-on-failure and sample
            shaping; reproduced with a private `random.Random(seed)`. ``salted``: ours, each
            loader its own `random.Random(seed ^ salt)` (no two tasks draw correlated data),
            pages at multiples of 100 retried as they are, samples shuffled.
    """

    draws: Literal["reference", "salted"]


class EvalRules(_Frozen):
    """How samples become requests and results become raw scores (SPEC §7).

    Attributes:
        prompting: ``reference``: prompts cut from the left to the sequence length with no room
            kept for generated tokens (IF-eval prompts never cut), reasoning contexts and
            references encoded with the tokenizer's special tokens and never cut, a reference
            loss context cut alone with the whole reference appended. ``ours``: every request
            fits the sequence length with its generation budget, templated text encoded
            without added special tokens (no second BOS), references cut on the right.
        text_loss_padding: the reference pads documents to the sequence length and counts the
            padded positions in the mean; ours scores real tokens only.
        stop_on_generation_config_eos: ours also stops generating at the model's
            `generation_config` end-of-turn ids; the reference stops only at the tokenizer's EOS.
    """

    prompting: Literal["reference", "ours"]
    text_loss_padding: bool
    stop_on_generation_config_eos: bool


class CheckRules(_Frozen):
    """What makes a model acceptable before it is scored (SPEC §4, §8).

    Attributes:
        reject_unused_weights: ours rejects files holding tensors no layer uses; the reference
            loads such a model and ignores them. Missing weights reject in both (the model
            would be random, and differently random on every validator: a safety divergence).
    """

    reject_unused_weights: bool


class HashRules(_Frozen):
    """Which downloaded files the content hash covers (SPEC §3).

    Attributes:
        file_set: ``reference``: exactly the files the reference's `from_pretrained` of the
            model and of its tokenizer fetch (at transformers 4.48.3); ``allowed``: ours, every
            top-level file on the allow-list.
    """

    file_set: Literal["reference", "allowed"]


class WeightRules(_Frozen):
    """From a round's scores to the weights set on chain (SPEC §3, §5).

    Attributes:
        ema_start: ``first_step``: the reference's tracker takes a competition's first step
            weights as its smoothed weights, undamped; ``zero``: ours, every model starts at 0
            and a new winner needs consecutive wins.
        all_failed: ``share``: when every model of a round fails, the reference shares the step
            weight equally among them; ``nobody``: ours, nobody gets weight from that round.
        copies: ``none``: the reference scores every hotkey's commitment, identical content
            included (the secure hash already binds an upload to one hotkey);
            ``earliest``: ours, of identical content hashes only the earliest commitment
            competes.
    """

    ema_start: Literal["first_step", "zero"]
    all_failed: Literal["share", "nobody"]
    copies: Literal["none", "earliest"]


class ScoringProtocol(_Frozen):
    """One protocol: its name, its weights version key, and the rules of each concern."""

    name: str
    weights_version_key: int = Field(ge=0)  # sent with every set_weights, checked against chain
    data: DataRules
    eval: EvalRules
    checks: CheckRules
    hashing: HashRules
    weights: WeightRules


REFERENCE_31 = ScoringProtocol(
    name="reference-3.1",
    weights_version_key=3010,  # the reference's __spec_version__: 1000*3 + 10*1 + 0
    data=DataRules(draws="reference"),
    eval=EvalRules(prompting="reference", text_loss_padding=True, stop_on_generation_config_eos=False),
    checks=CheckRules(reject_unused_weights=False),
    hashing=HashRules(file_set="reference"),
    weights=WeightRules(ema_start="first_step", all_failed="share", copies="none"),
)

NEXT = ScoringProtocol(
    name="next",
    weights_version_key=3011,  # above the reference's: a subnet that switches raises its minimum
    data=DataRules(draws="salted"),
    eval=EvalRules(prompting="ours", text_loss_padding=False, stop_on_generation_config_eos=True),
    checks=CheckRules(reject_unused_weights=True),
    hashing=HashRules(file_set="allowed"),
    weights=WeightRules(ema_start="zero", all_failed="nobody", copies="earliest"),
)

PROTOCOLS: dict[str, ScoringProtocol] = {p.name: p for p in (REFERENCE_31, NEXT)}

__all__ = [
    "NEXT",
    "PROTOCOLS",
    "REFERENCE_31",
    "CheckRules",
    "DataRules",
    "EvalRules",
    "HashRules",
    "ScoringProtocol",
    "WeightRules",
]
