"""Scoring protocols: every rule that decides a sample, a score, a verdict or a weight, and
differs between the reference subnet and this project (SPEC §0).

A validator earns its dividends by agreeing with the other validators of its subnet, and on
subnet 37 those run the reference implementation (macrocosm-os/finetuning 3.1.0 @ afd44037e9a1,
taoverse @ e350d5e40a29). So, like a blockchain client with its forks, the project implements
protocols, and the schedule names the one in force per period:

- `REFERENCE_31` reproduces the reference exactly (the mainnet schedule);
- `NEXT` carries this project's improvements (the local schedule; a future mainnet period could
  switch to it at a block);
- `SEEDS` is `NEXT` with HELM ranking, for the two competitions of the seeds (SPEC §9: the
  `efficient-1gpu`, `merging`, `seeds` and `seeds-local` schedules), under its own weights key.

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
            Text loss: the reference cuts a document on the left, keeping its end (its shared
            tokenizer is left-truncating by then), and its degeneracy gate continues the first
            two documents with EOS banned and the model's own repetition penalty; ours keeps a
            document's start and continues two fixed prompts. A tokenizer without a chat
            template, or a reference of no tokens, fails the whole model under the reference
            (its template call, or its error handler, raises); ours prompts a base model
            plainly and rejects the empty reference at request building.
        text_loss_padding: the reference pads documents to the sequence length and counts the
            padded positions in the mean; ours scores real tokens only.
        stop_on_generation_config_eos: ours also stops generating at the model's
            `generation_config` end-of-turn ids; the reference stops only at the tokenizer's EOS.
        loss_in_model_dtype: the reference computes each cross-entropy on the logits as the
            model returns them (bf16 for the competitions' bf16 models), so its log-softmax
            and per-sample mean are bf16 values of the device's kernels; ours upcasts the
            logits to fp32 and sums in fp64.
        ifeval: ``reference``: the reference's IF-eval prompt and rule texts, and its checks
            (words by `str.split`, sentences by an untrained Punkt splitter, keywords among
            words stripped of ASCII punctuation, `str.isupper`/`islower`, bullets = lines
            starting with ``*``, exact ends-with and quotes, near-duplicates with only space
            and tab as junk). ``ours``: our prompt, texts and checks
            (`finetune.eval.ifeval_rules`).
        loss_unit: ``token``: a loss task's raw score is the mean over samples of the nats per
            scored token (the reference). ``byte``: of the bits per UTF-8 byte of the scored
            text, so that a model's own tokenizer cannot change the unit: splitting text into
            more, easily predicted tokens lowers a per-token mean but not the bits the text
            costs.
        tokenizer_round_trip: before scoring with a model's own tokenizer (not a competition's
            fixed one), every text of the round's loss tasks must come back unchanged from
            ``decode(encode(text))`` (up to Unicode NFC); a tokenizer whose normalizer, added
            tokens or decoder change the text (insert marker tokens, drop characters) fails
            the model with reason ``tokenizer_round_trip``. The reference checks nothing.
    """

    prompting: Literal["reference", "ours"]
    text_loss_padding: bool
    stop_on_generation_config_eos: bool
    loss_in_model_dtype: bool
    ifeval: Literal["reference", "ours"]
    loss_unit: Literal["token", "byte"]
    tokenizer_round_trip: bool


class CheckRules(_Frozen):
    """What makes a commitment and a model acceptable before it is scored (SPEC §2, §4, §8).

    Attributes:
        reject_unused_weights: ours rejects files holding tensors no layer uses; the reference
            loads such a model and ignores them (so a header count bounds nothing either, and
            only ours rejects a header count over twice the limit before downloading). Missing
            weights reject in both (the model would be random, and differently random on every
            validator: a safety divergence).
        commitment: how chain text becomes a model id. ``reference``: as the reference's
            validator reads it: split on ':', a 4-field text is a legacy id of competition 0,
            the competition id read as Python's `int` reads it (' 3', '03', '+3', '1_0',
            Unicode digits), fields after the fifth ignored, a repo id as long as the 128
            bytes allow (40 characters), any secure hash text (one that is no digest simply
            never matches); still required, a safety divergence: a 40-hex commit and repo
            names the Hub allows (the reference would try and fail to download anything
            else). ``strict``: ours, exactly 5 fields, a canonical decimal id 0..255, a repo
            id of at most 38 characters, a canonical base64 SHA-256 secure hash.
        architecture: ``model_type``: the reference builds the class that config.json's
            `model_type` selects and accepts it if that class is in the competition's list;
            `architectures` only has to be non-empty. ``declared``: ours, `architectures`
            names exactly one allowed class and `model_type` must select that same class.
        remote_code_maps: ``ignore``: an `auto_map` in config.json or tokenizer_config.json
            changes nothing in the reference (it never runs remote code for a model type it
            knows, nor do we). ``reject``: ours rejects a model that asks for remote code.
        stray_files: ``ignore``: the reference never downloads files outside what
            `from_pretrained` fetches, so pickles or code beside the safetensors weights
            change nothing. ``reject``: ours rejects a revision holding pickles or code.
        norms: ``reference``: the reference's rule: per layer of `model.model.layers`, the
            q, k, v, o, up and down projections (not gate), each norm taken on the bf16
            weight and rounded to bf16; any norm > hard rejects; the mean over those six
            types of the share of layers > soft rejects when > the allowed fraction; NaN
            norms pass; a model without that layout (Phi3, Phi, GPT-NeoX, Falcon, Bart) or
            without layers makes the reference's check crash, recorded here as
            `norm_rule_unsupported`. ``ours``: every 2-D projection of every decoder layer
            (fused layouts and gate included) in float64; NaN or inf reject.
    """

    reject_unused_weights: bool
    commitment: Literal["reference", "strict"]
    architecture: Literal["model_type", "declared"]
    remote_code_maps: Literal["ignore", "reject"]
    stray_files: Literal["ignore", "reject"]
    norms: Literal["reference", "ours"]


class HashRules(_Frozen):
    """Which downloaded files the content hash covers (SPEC §3).

    Attributes:
        file_set: ``reference``: exactly the files the reference's `from_pretrained` of the
            model and of its tokenizer fetch (at transformers 4.48.3); two of them with equal
            bytes crash the reference's download, so such a model is rejected
            (`duplicate_files`). ``allowed``: ours, every top-level file on the allow-list.
    """

    file_set: Literal["reference", "allowed"]


class WeightRules(_Frozen):
    """From a round's scores to the weights set on chain (SPEC §3, §5).

    Attributes:
        scores: ``reference``: a model's score is a running sum in task order (weights
            rescaled only when they do not sum to about 1), and a NaN score is not a failure:
            it beats no model and is beaten by none; ``ours``: a NaN anywhere fails the model.
        smoothing: ``reference``: the reference's tracker, in float32 with torch's order of
            additions: a competition's first step *is* its smoothed weights (undamped), every
            weights computation renormalises the stored weights in place, and weights belong
            to a uid (a hotkey that takes over a uid inherits them). ``ours``: every model
            starts at 0, so a new winner needs consecutive wins, in float64, by hotkey.
        all_failed: ``share``: every evaluated model at the best win rate gets the step, failed
            ones too, so when every model fails they all share it (the reference); ``nobody``:
            failed models never get step weight, so an all-failed round gives weight to nobody.
        keep: models carried to the next round: ``reference``: the top 3 by ``1 + w`` where
            the smoothed weight w is at least 0.001, else by win rate, ties in evaluation
            order; ``ours``: by (smoothed weight, win rate), ties to the lower uid.
        retry: ``reference``: a model that lost is evaluated again when its last result beat
            that round's winner by raw score but not by the winner's epsilon then (which has
            decayed since), or after its first failure; ``ours``: the same against the current
            winner, plus after a change of the competition's tasks.
        copies: ``none``: the reference scores every hotkey's commitment, identical content
            included (the secure hash already binds an upload to one hotkey);
            ``earliest``: ours, of identical content hashes only the earliest commitment
            competes.
        updated_models_limit: the reference admits newly updated models only while fewer than
            this many are pending or kept over all competitions (16); the rest wait for later
            rounds. None: ours, every updated model is evaluated in the next round.
        clones: ``keep``: every model takes part in the win rates (the reference); fresh clones
            of a leader then carry a larger epsilon than the old leader, beat a better
            newcomer that beats the leader, and shield it. ``drop``: ours (the fix the sibling
            pretraining subnet adopted), a model that cannot beat every earlier model once
            their advantage has fully decayed is left out before win rates are computed.
        ranking: ``win_rate``: pairwise wins of the weighted scores with the earlier upload's
            epsilon advantage (SPEC §5). ``helm``: the seeds' ranking (SPEC §9): on each task a
            model's mean win rate over the others (ties count half), multiplied over the
            tasks; no age advantage, and `clones` plays no part. Every competition of a
            period must declare the same ranking as its `aggregation` (the schedule checks).
    """

    scores: Literal["reference", "ours"]
    smoothing: Literal["reference", "ours"]
    all_failed: Literal["share", "nobody"]
    keep: Literal["reference", "ours"]
    retry: Literal["reference", "ours"]
    copies: Literal["none", "earliest"]
    clones: Literal["keep", "drop"]
    updated_models_limit: int | None = Field(ge=1)
    ranking: Literal["win_rate", "helm"] = "win_rate"


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
    eval=EvalRules(
        prompting="reference",
        text_loss_padding=True,
        stop_on_generation_config_eos=False,
        loss_in_model_dtype=True,
        ifeval="reference",
        loss_unit="token",
        tokenizer_round_trip=False,
    ),
    checks=CheckRules(
        reject_unused_weights=False,
        commitment="reference",
        architecture="model_type",
        remote_code_maps="ignore",
        stray_files="ignore",
        norms="reference",
    ),
    hashing=HashRules(file_set="reference"),
    weights=WeightRules(scores="reference", smoothing="reference", all_failed="share", keep="reference",
                        retry="reference", copies="none", clones="keep", updated_models_limit=16),
)

NEXT = ScoringProtocol(
    name="next",
    weights_version_key=3011,  # above the reference's: a subnet that switches raises its minimum
    data=DataRules(draws="salted"),
    eval=EvalRules(
        prompting="ours",
        text_loss_padding=False,
        stop_on_generation_config_eos=True,
        loss_in_model_dtype=False,
        ifeval="ours",
        loss_unit="byte",
        tokenizer_round_trip=True,
    ),
    checks=CheckRules(
        reject_unused_weights=True,
        commitment="strict",
        architecture="declared",
        remote_code_maps="reject",
        stray_files="reject",
        norms="ours",
    ),
    hashing=HashRules(file_set="allowed"),
    weights=WeightRules(scores="ours", smoothing="ours", all_failed="nobody", keep="ours", retry="ours",
                        copies="earliest", clones="drop", updated_models_limit=None),
)

# The seeds' competitions (SPEC §9): everything of `next`, ranked the HELM way. Its own key,
# so weights set under it never pass for `next`'s (or the reference's) on a shared subnet.
SEEDS = NEXT.model_copy(update={
    "name": "seeds-helm",
    "weights_version_key": 3020,
    "weights": NEXT.weights.model_copy(update={"ranking": "helm"}),
})

PROTOCOLS: dict[str, ScoringProtocol] = {p.name: p for p in (REFERENCE_31, NEXT, SEEDS)}

__all__ = [
    "NEXT",
    "PROTOCOLS",
    "REFERENCE_31",
    "SEEDS",
    "CheckRules",
    "DataRules",
    "EvalRules",
    "HashRules",
    "ScoringProtocol",
    "WeightRules",
]
