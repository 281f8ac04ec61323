"""Deterministic fake contents for the data sources the reference validator reads.

Shared by ``scripts/compat/golden_data.py`` (which runs the reference against these contents
and records what it draws) and by our tests (which rebuild the same contents from a golden
case's ``layout.params`` and check that our loaders draw the same samples).

Everything here is a pure function of the parameters: rows are generated on demand from
``random.Random(<string>)`` (seeded through SHA-512 of the string, so identical in every
process and Python build), never from the global RNG and never from ``hash()``.
Standard library only: this module is imported both by the project's venv and by the
reference's venv.

Usage::

    layout = build(LAYOUTS["sft_small"])          # or build(case["layout"]["params"])
    FakeDatasetsServer(layout.datasets, rate_limit_offsets=layout.rate_limit_offsets)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SYNTHETIC_1_SFT = "PrimeIntellect/SYNTHETIC-1-SFT-Data"
CODEFORCES_COTS = "open-r1/codeforces-cots"
FINEWEB_EDU = "HuggingFaceFW/fineweb-edu-score-2"
MACROBENCH = "macrocosm-os/macrobench-bittensor-01"

Row = dict[str, Any]


class LazyRows(Sequence):
    """A read-only sequence of `n` rows made by `make(index)` on access (huge splits cost
    nothing until a page of them is served)."""

    def __init__(self, n: int, make: Callable[[int], Row]) -> None:
        self._n = n
        self._make = make

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self._make(i) for i in range(*index.indices(self._n))]
        if index < 0:
            index += self._n
        if not 0 <= index < self._n:
            raise IndexError(index)
        return self._make(index)


@dataclass(frozen=True)
class HubLayout:
    """What the Hub holds for the macrobench dataset, read through the `datasets` library.

    Attributes:
        configs: Config names in the order `get_dataset_config_names` returns them.
        rows: Rows of each config's split (the split has the config's name).
        failing: Configs whose `load_dataset` raises.
    """

    configs: tuple[str, ...]
    rows: Mapping[str, Sequence[Row]]
    failing: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Layout:
    """Contents for one golden scenario.

    Attributes:
        params: The parameters this layout was built from (recorded in golden cases).
        datasets: ``{hub_id: {(config, split): rows}}`` for `FakeDatasetsServer`; the
            insertion order is the order ``/size`` lists the splits in.
        rate_limit_offsets: ``{hub_id: n}``: ``/rows`` answers 429 when offset > n.
        faults: ``(request_index, status, retry_after)``: the server answers request number
            `request_index` (0-based over all requests, ``/size`` included) with `status`.
        hub: Macrobench contents, or None.
        validator_hotkeys: Subnet-1 validator hotkeys the loader is given.
    """

    params: Mapping[str, Any]
    datasets: dict[str, dict[tuple[str, str], Sequence[Row]]] = field(default_factory=dict)
    rate_limit_offsets: dict[str, int] = field(default_factory=dict)
    faults: tuple[tuple[int, int, str | None], ...] = ()
    hub: HubLayout | None = None
    validator_hotkeys: tuple[str, ...] = ()


# -- text helpers --------------------------------------------------------------------------

_NOUNS = (
    "river mountain engine garden theory market signal library cell planet harbour protein "
    "circuit village orbit crystal furnace ledger canyon lantern bridge vaccine glacier"
).split()
_VERBS = "measures builds carries shapes divides explains protects reflects absorbs".split()
_ADJS = "ancient rapid narrow bright silent heavy fragile modern frozen golden".split()
_ADVS = "quickly rarely gently often slowly".split()


def _rng(*parts: object) -> random.Random:
    return random.Random("|".join(str(p) for p in parts))


def _phrase(rng: random.Random, words: int) -> str:
    out = []
    for i in range(words):
        pool = (_ADJS, _NOUNS, _VERBS, _ADVS, _NOUNS)[i % 5]
        out.append(rng.choice(pool))
    return " ".join(out)


def _weighted(rng: random.Random, mix: Sequence[Sequence[Any]]) -> str:
    total = sum(float(w) for _, w in mix)
    point = rng.random() * total
    for kind, weight in mix:
        point -= float(weight)
        if point < 0:
            return str(kind)
    return str(mix[-1][0])


def _chat(user: Any, assistant: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


# -- SYNTHETIC-1-SFT -----------------------------------------------------------------------

SFT_KINDS = (
    "math",  # <think>…</think> then "$\\boxed{N}$."
    "math_nested",  # \\boxed{\\frac{a}{b}}: the reference's regex stops at the first "}"
    "math_two_boxed",  # two different boxed answers; the last one counts
    "math_same_boxed",  # the same boxed answer twice
    "math_no_boxed",  # no \\boxed at all
    "math_empty_boxed",  # \\boxed{}
    "math_answer_in_think",  # the only boxed answer is inside <think>
    "code",  # … {"output": "v"}
    "code_repeated",  # the final output string also appears earlier in the trace
    "code_no_space",  # {"output":"v"}: not matched by the reference's regex
    "code_none",  # no output object
    "other_type",  # a task type outside the supported pair
    "no_task_type",  # task_type missing
    "one_message",  # only the user message
    "null_content",  # assistant content is null
    "three_messages",  # system, user, assistant
)


def _sft_row(salt: str, config: str, index: int, mix: Sequence[Sequence[Any]]) -> Row:
    rng = _rng("sft", salt, config, index)
    kind = _weighted(rng, mix)
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    topic = _phrase(rng, 3)
    question = f"[{config}#{index}] {topic}: compute {a} + {b}."
    think = f"<think>\nAdd {a} and {b} ({topic}).\n</think>\n\n"
    task = "verifiable_math"
    if kind == "math":
        answer = f"{think}So the result is $\\boxed{{{a + b}}}$."
    elif kind == "math_nested":
        answer = f"{think}The ratio is $\\boxed{{\\frac{{{a}}}{{{b}}}}}$"
    elif kind == "math_two_boxed":
        answer = f"{think}First $\\boxed{{{a}}}$, finally $\\boxed{{{a + b}}}$.\nDone."
    elif kind == "math_same_boxed":
        answer = f"<think>\nMaybe \\boxed{{{a + b}}}.\n</think>\n\nAnswer: \\boxed{{{a + b}}}"
    elif kind == "math_no_boxed":
        answer = f"{think}The result is {a + b}."
    elif kind == "math_empty_boxed":
        answer = f"{think}The result is \\boxed{{}} ({a + b})."
    elif kind == "math_answer_in_think":
        answer = f"<think>\nIt is \\boxed{{{a + b}}}.\n</think>\n\nAs shown above."
    elif kind in ("code", "code_repeated", "code_no_space", "code_none"):
        task = "code_output_prediction"
        value = f"{a * b}"
        question = f"[{config}#{index}] Predict the output of print({a}*{b}) ({topic})."
        if kind == "code":
            answer = f'{think}The program prints {value}.\n{{"output": "{value}"}}'
        elif kind == "code_repeated":
            out = f'{{"output": "{value}"}}'
            answer = f"<think>\nGuess {out} early.\n</think>\n\nFinal:\n{out}\n"
        elif kind == "code_no_space":
            answer = f'{think}{{"output":"{value}"}}'
        else:
            answer = f"{think}It prints {value}."
    elif kind == "other_type":
        task = "llm_judgeable_groundtruth_similarity"
        answer = f"{think}Roughly {a + b}."
    else:
        answer = f"{think}The result is $\\boxed{{{a + b}}}$."
    messages: list[dict[str, Any]] = _chat(question, answer)
    if kind == "one_message":
        messages = messages[:1]
    elif kind == "null_content":
        messages[1]["content"] = None
    elif kind == "three_messages":
        messages = [{"role": "system", "content": f"Be brief ({index})."}, *messages]
    row: Row = {
        "response_id": f"resp-{config}-{index}",
        "problem_id": f"prob-{index}",
        "task_type": task,
        "score": 1,
        "messages": messages,
    }
    if kind == "no_task_type":
        del row["task_type"]
    return row


def _build_sft(params: Mapping[str, Any]) -> Layout:
    salt = str(params["salt"])
    mix = params["mix"]
    table: dict[tuple[str, str], Sequence[Row]] = {}
    for config, split, n in params["splits"]:
        table[(config, split)] = LazyRows(int(n), lambda i, c=config: _sft_row(salt, c, i, mix))
    return Layout(params=params, datasets={SYNTHETIC_1_SFT: table}, faults=_faults(params))


# -- codeforces-cots -----------------------------------------------------------------------

CODEFORCES_LIMIT_CHARS = 4 * (16_384 - 10)  # the reference's length bound, in characters

CODEFORCES_KINDS = (
    "short",
    "medium",
    "at_limit",  # len(q)//4 + len(t)//4 + 10 == 16384: kept
    "over_limit",  # one estimated token more: dropped
    "way_over",  # far over the limit: dropped
    "three_messages",  # dropped (needs exactly two)
    "one_message",  # dropped
    "empty_trace",  # kept, reference is empty
)


def _codeforces_row(salt: str, config: str, index: int, mix: Sequence[Sequence[Any]]) -> Row:
    rng = _rng("cf", salt, config, index)
    kind = _weighted(rng, mix)
    letter = "ABCDEF"[index % 6]
    problem = f"[{config}#{index}] Problem {letter}: {_phrase(rng, 6)}."
    trace = f"<think>\n{_phrase(rng, 5)}\n</think>\n\n```cpp\nint main(){{return {index};}}\n```\n"
    if kind == "medium":
        trace = "<think>\n" + " ".join(_phrase(rng, 5) for _ in range(12)) + "\n</think>\nok\n"
    elif kind in ("at_limit", "over_limit", "way_over"):
        q_len = len(problem)
        budget = 4 * (16_384 - 10 - q_len // 4)  # trace chars that keep the sum at the limit
        extra = {"at_limit": 0, "over_limit": 4, "way_over": 40_000}[kind]
        trace = _padded(f"<think>\n[{kind} {index}] ", budget + extra + 3)
    elif kind == "empty_trace":
        trace = ""
    messages: list[dict[str, Any]] = _chat(problem, trace)
    if kind == "three_messages":
        messages = [{"role": "system", "content": "You are a coder."}, *messages]
    elif kind == "one_message":
        messages = messages[:1]
    return {
        "id": f"{1000 + index // 6}/{letter}",
        "contest_type": "ICPC" if index % 3 else "CF",
        "messages": messages,
    }


def _padded(head: str, length: int) -> str:
    filler = "x" * max(0, length - len(head))
    return head + filler


def _build_codeforces(params: Mapping[str, Any]) -> Layout:
    salt = str(params["salt"])
    mix = params["mix"]
    table: dict[tuple[str, str], Sequence[Row]] = {}
    for config, split, n in params["splits"]:
        table[(config, split)] = LazyRows(
            int(n), lambda i, c=config: _codeforces_row(salt, c, i, mix)
        )
    return Layout(params=params, datasets={CODEFORCES_COTS: table}, faults=_faults(params))


# -- FineWeb-edu ---------------------------------------------------------------------------


def _fineweb_row(salt: str, config: str, index: int) -> Row:
    rng = _rng("fw", salt, config, index)
    words = rng.randint(0, 7)
    text = f"{config}/{index} {_phrase(rng, words)}".strip() if words else ""
    return {
        "text": text,
        "id": f"<urn:uuid:{salt}-{config}-{index}>",
        "dump": config,
        "url": f"https://example.org/{index}",
        "score": 2.5,
        "int_score": 3,
    }


def _build_fineweb(params: Mapping[str, Any]) -> Layout:
    salt = str(params["salt"])
    table: dict[tuple[str, str], Sequence[Row]] = {}
    for config, split, n in params["splits"]:
        table[(config, split)] = LazyRows(int(n), lambda i, c=config: _fineweb_row(salt, c, i))
    limits = {}
    if params.get("rate_limit_over_offset") is not None:
        limits[FINEWEB_EDU] = int(params["rate_limit_over_offset"])
    return Layout(
        params=params,
        datasets={FINEWEB_EDU: table},
        rate_limit_offsets=limits,
        faults=_faults(params),
    )


# -- macrobench (subnet-1 multiple choice, read through the Hub) ---------------------------

MACROBENCH_KINDS = (
    "plain",  # "Question?\nA. …\nB. …\nC. …\nD. …"
    "context",  # a context line, then the question line, then the options
    "inline",  # all on one line
    "paren_options",  # "A) …" options: the reference's IF-eval parser finds none
    "one_word_answer",  # the correct option is a single word (IF-eval drops it)
    "bad_reference",  # reference letter outside A-D
)


def _macrobench_row(salt: str, config: str, index: int, params: Mapping[str, Any]) -> Row:
    rng = _rng("mb", salt, config, index)
    kind = _weighted(rng, params["mix"])
    letter = rng.choice("ABCD")
    options = [_phrase(rng, rng.randint(2, 5)).capitalize() for _ in range(4)]
    if kind == "one_word_answer":
        options["ABCD".index(letter)] = rng.choice(_NOUNS).capitalize()
    stem = f"Which {rng.choice(_NOUNS)} {rng.choice(_VERBS)} the {_phrase(rng, 2)} ({index})?"
    if kind == "paren_options":
        body = "\n".join(f"{k}) {v}" for k, v in zip("ABCD", options, strict=True))
        challenge = f"{stem}\n{body}"
    elif kind == "inline":
        challenge = stem + " " + " ".join(f"{k}. {v}" for k, v in zip("ABCD", options, strict=True))
    else:
        body = "\n".join(f"{k}. {v}" for k, v in zip("ABCD", options, strict=True))
        challenge = f"{stem}\n{body}"
        if kind == "context":
            challenge = f"Context: the {_phrase(rng, 4)}.\n{challenge}"
    reference = letter if kind != "bad_reference" else rng.choice(["E", "a", "", "AB"])
    hotkeys = params["row_hotkeys"]
    return {
        "id": f"{config}-{index}",
        "challenge": challenge,
        "reference": reference,
        "hotkey": hotkeys[index % len(hotkeys)],
        "timestamp": f"{config[:4]}-{config[4:6]}-{config[6:8]}T{index % 24:02d}:00:00",
    }


def _build_macrobench(params: Mapping[str, Any]) -> Layout:
    salt = str(params["salt"])
    configs = tuple(str(c) for c, _ in params["configs"])
    rows = {
        str(c): [_macrobench_row(salt, str(c), i, params) for i in range(int(n))]
        for c, n in params["configs"]
    }
    hub = HubLayout(configs=configs, rows=rows, failing=frozenset(params.get("failing", ())))
    return Layout(params=params, hub=hub, validator_hotkeys=tuple(params["validator_hotkeys"]))


# -- registry ------------------------------------------------------------------------------


def _faults(params: Mapping[str, Any]) -> tuple[tuple[int, int, str | None], ...]:
    return tuple(
        (int(i), int(status), None if after is None else str(after))
        for i, status, after in params.get("faults", ())
    )


_BUILDERS: dict[str, Callable[[Mapping[str, Any]], Layout]] = {
    "synthetic_1_sft": _build_sft,
    "codeforces_cots": _build_codeforces,
    "fineweb": _build_fineweb,
    "macrobench": _build_macrobench,
}


def build(params: Mapping[str, Any]) -> Layout:
    """The layout described by `params` (a golden case's ``layout.params``)."""
    return _BUILDERS[str(params["kind"])](params)


_SFT_MIX = [
    ["math", 30],
    ["math_nested", 4],
    ["math_two_boxed", 4],
    ["math_same_boxed", 3],
    ["math_no_boxed", 3],
    ["math_empty_boxed", 2],
    ["math_answer_in_think", 3],
    ["code", 20],
    ["code_repeated", 4],
    ["code_no_space", 3],
    ["code_none", 2],
    ["other_type", 15],
    ["no_task_type", 2],
    ["one_message", 2],
    ["null_content", 1],
    ["three_messages", 2],
]
_CF_MIX = [
    ["short", 60],
    ["medium", 20],
    ["at_limit", 4],
    ["over_limit", 4],
    ["way_over", 3],
    ["three_messages", 4],
    ["one_message", 2],
    ["empty_trace", 3],
]
_MB_MIX = [
    ["plain", 60],
    ["context", 10],
    ["inline", 8],
    ["paren_options", 6],
    ["one_word_answer", 10],
    ["bad_reference", 6],
]
_HOTKEYS = ["5Vali" + c * 43 for c in "ABCDE"]

# Named layouts the generator runs (three or more per dataset).
LAYOUTS: dict[str, dict[str, Any]] = {
    # SYNTHETIC-1-SFT: one "default" config, as on the Hub.
    "sft_small": {
        "kind": "synthetic_1_sft",
        "salt": "sft_small",
        "mix": _SFT_MIX,
        "splits": [["default", "train", 480]],
    },
    "sft_medium": {
        "kind": "synthetic_1_sft",
        "salt": "sft_medium",
        "mix": _SFT_MIX,
        "splits": [["default", "train", 6_000]],
    },
    "sft_sparse": {  # few supported rows per page: many extra page fetches
        "kind": "synthetic_1_sft",
        "salt": "sft_sparse",
        "mix": [["math", 2], ["code", 1], ["other_type", 92], ["no_task_type", 5]],
        "splits": [["default", "train", 894_086]],
    },
    "sft_starved": {  # too few supported rows: ten extra fetch rounds, then fewer than 120
        "kind": "synthetic_1_sft",
        "salt": "sft_starved",
        "mix": [["math", 3], ["code_repeated", 2], ["other_type", 995]],
        "splits": [["default", "train", 50_000]],
    },
    "sft_two_configs": {  # more than one config: "default" is left out
        "kind": "synthetic_1_sft",
        "salt": "sft_two",
        "mix": _SFT_MIX,
        "splits": [["default", "train", 5_000], ["extra", "train", 2_000], ["more", "train", 900]],
    },
    "sft_flaky": {  # 500, 429 with Retry-After, 503 on the first page requests
        "kind": "synthetic_1_sft",
        "salt": "sft_flaky",
        "mix": _SFT_MIX,
        "splits": [["default", "train", 3_000]],
        "faults": [[1, 500, None], [2, 429, "7"], [4, 503, None]],
    },
    "sft_too_small": {  # fewer rows than a page: the page draw raises ValueError
        "kind": "synthetic_1_sft",
        "salt": "sft_tiny",
        "mix": _SFT_MIX,
        "splits": [["default", "train", 200]],
    },
    # codeforces-cots: several configs plus "default".
    "cf_configs": {
        "kind": "codeforces_cots",
        "salt": "cf_configs",
        "mix": _CF_MIX,
        "splits": [
            ["default", "train", 47_780],
            ["solutions", "train", 47_780],
            ["solutions_py", "train", 9_560],
            ["solutions_w_editorials", "train", 29_180],
            ["checker_interactor", "train", 3_140],
        ],
    },
    "cf_two_splits": {  # a config listed with two splits: the later split wins
        "kind": "codeforces_cots",
        "salt": "cf_two",
        "mix": _CF_MIX,
        "splits": [
            ["default", "train", 2_000],
            ["solutions", "train", 2_000],
            ["solutions", "test", 600],
            ["solutions_py", "train", 1_500],
        ],
    },
    "cf_single": {  # only "default": then "default" is used
        "kind": "codeforces_cots",
        "salt": "cf_single",
        "mix": _CF_MIX,
        "splits": [["default", "train", 1_234]],
    },
    "cf_small_config": {  # a config of 130 rows: most initial offsets leave no page
        "kind": "codeforces_cots",
        "salt": "cf_small",
        "mix": _CF_MIX,
        "splits": [
            ["default", "train", 5_000],
            ["solutions", "train", 5_000],
            ["tiny", "train", 130],
        ],
    },
    # FineWeb-edu-score-2: dumps plus "default".
    "fw_dumps": {
        "kind": "fineweb",
        "salt": "fw_dumps",
        "splits": [
            ["default", "train", 90_000],
            ["CC-MAIN-2013-20", "train", 30_000],
            ["CC-MAIN-2019-04", "train", 45_000],
            ["CC-MAIN-2024-10", "train", 15_000],
        ],
    },
    "fw_single_default": {
        "kind": "fineweb",
        "salt": "fw_single",
        "splits": [["default", "train", 2_500]],
    },
    "fw_duplicates": {  # 199 rows: one or two distinct pages, then the duplicate cap
        "kind": "fineweb",
        "salt": "fw_dup",
        "splits": [["default", "train", 10_000], ["CC-MAIN-2020-05", "train", 199]],
    },
    "fw_rate_limited": {  # the real server answers 429 for offset > 1,000,000
        "kind": "fineweb",
        "salt": "fw_rl",
        "rate_limit_over_offset": 1_000_000,
        "splits": [
            ["default", "train", 9_000_000],
            ["CC-MAIN-2021-04", "train", 1_500_000],
            ["CC-MAIN-2022-05", "train", 1_100_000],
        ],
    },
    # macrobench: configs named by date, split named like the config.
    "mb_few": {
        "kind": "macrobench",
        "salt": "mb_few",
        "mix": _MB_MIX,
        "configs": [[f"202503{d:02d}", 36] for d in range(1, 7)],
        "row_hotkeys": _HOTKEYS[:4],
        "validator_hotkeys": _HOTKEYS[:3],
    },
    "mb_many": {  # more than NUM_CONFIGS_TO_SAMPLE (10) configs; one fails to load
        "kind": "macrobench",
        "salt": "mb_many",
        "mix": _MB_MIX,
        "configs": [[f"2025{m:02d}{d:02d}", 45 + 7 * d] for m in (2, 3) for d in (3, 9, 15, 21)]
        + [[f"202504{d:02d}", 60] for d in range(1, 9)],
        "failing": ["20250309"],
        "row_hotkeys": _HOTKEYS,
        "validator_hotkeys": _HOTKEYS[1:4],
    },
    "mb_scarce": {  # few rows from known validators: under MIN_ALLOWED_SAMPLES (50)
        "kind": "macrobench",
        "salt": "mb_scarce",
        "mix": _MB_MIX,
        "configs": [["20250110", 40], ["20250111", 40], ["20250112", 41]],
        "row_hotkeys": _HOTKEYS,
        "validator_hotkeys": _HOTKEYS[2:3],
    },
    "mb_no_hotkey_filter": {  # no validator hotkeys known: rows of any hotkey count
        "kind": "macrobench",
        "salt": "mb_open",
        "mix": _MB_MIX,
        "configs": [[f"2025{m:02d}01", 80] for m in range(1, 13)],
        "row_hotkeys": _HOTKEYS[:2],
        "validator_hotkeys": [],
    },
}

__all__ = [
    "CODEFORCES_COTS",
    "CODEFORCES_LIMIT_CHARS",
    "FINEWEB_EDU",
    "LAYOUTS",
    "MACROBENCH",
    "SYNTHETIC_1_SFT",
    "HubLayout",
    "Layout",
    "LazyRows",
    "build",
]
