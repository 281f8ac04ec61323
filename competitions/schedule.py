"""The schedules (start block -> competitions in force) and lookups by name or id.

Mainnet history (SPEC §4), as the reference's schedule has it: B7_MULTICHOICE 75 % +
INSTRUCT_8B 25 %, then INSTRUCT_8B alone with its second-period task weights from 4,675,163,
then DISTILLED_REASONING_3B alone from 5,158,632. Every mainnet period runs protocol
`reference-3.1`; the local schedule (devnet, demo, tests) runs `next`.
"""

from __future__ import annotations

import difflib

from competitions.definitions import (
    B7_MULTICHOICE,
    DISTILLED_REASONING_3B,
    EFFICIENT_1GPU_1DAY,
    INSTRUCT_8B,
    INSTRUCT_8B_V2,
    MERGE_GENERALIST,
    SN9_MODEL,
)
from competitions.local import LOCAL_EFFICIENT, LOCAL_INSTRUCT, LOCAL_MERGING, LOCAL_REASONING
from finetune.competition import Competition, CompetitionShare, Schedule, ScheduleEntry
from finetune.errors import ConfigError, UnknownIdError
from finetune.protocol import NEXT, REFERENCE_31, SEEDS, ScoringProtocol

INSTRUCT_ONLY_BLOCK = 4_675_163  # B7_MULTICHOICE ends; INSTRUCT_8B takes the whole reward
REASONING_BLOCK = 5_158_632  # DISTILLED_REASONING_3B replaces INSTRUCT_8B


def _entry(
    start_block: int, protocol: ScoringProtocol, *shares: tuple[Competition, float]
) -> ScheduleEntry:
    return ScheduleEntry(
        start_block=start_block,
        protocol=protocol,
        competitions=tuple(CompetitionShare(competition=c, reward_share=s) for c, s in shares),
    )


SCHEDULE = Schedule(
    entries=(
        # From before this project's history starts (SN9_MODEL had been retired by then).
        _entry(0, REFERENCE_31, (B7_MULTICHOICE, 0.75), (INSTRUCT_8B, 0.25)),
        # B7 ends; INSTRUCT_8B takes the whole reward with its second-period task weights.
        _entry(INSTRUCT_ONLY_BLOCK, REFERENCE_31, (INSTRUCT_8B_V2, 1.0)),
        _entry(REASONING_BLOCK, REFERENCE_31, (DISTILLED_REASONING_3B, 1.0)),
    )
)

# Devnet and demo: both tiny competitions from block 0; unequal shares so the scaling shows.
# Reasoning carries the larger share locally: its pure-loss tasks respond to a few minutes of
# CPU training, so the demo's ranking is robust.
LOCAL_SCHEDULE = Schedule(entries=(_entry(0, NEXT, (LOCAL_INSTRUCT, 0.4), (LOCAL_REASONING, 0.6)),))

# The seeds' two competitions (SPEC §9), each alone or both, under the HELM protocol; none of
# them shares a period (or a weights key) with the mainnet or local schedules.
EFFICIENT_SCHEDULE = Schedule(entries=(_entry(0, SEEDS, (EFFICIENT_1GPU_1DAY, 1.0)),))
MERGING_SCHEDULE = Schedule(entries=(_entry(0, SEEDS, (MERGE_GENERALIST, 1.0)),))
SEEDS_SCHEDULE = Schedule(entries=(_entry(0, SEEDS, (EFFICIENT_1GPU_1DAY, 0.5), (MERGE_GENERALIST, 0.5)),))
# Their tiny twins for the devnet and the seeds demo.
SEEDS_LOCAL_SCHEDULE = Schedule(entries=(_entry(0, SEEDS, (LOCAL_EFFICIENT, 0.5), (LOCAL_MERGING, 0.5)),))

# Every definition, superseded periods included (INSTRUCT_8B appears twice, same id and name).
ALL_COMPETITIONS: tuple[Competition, ...] = (
    SN9_MODEL,
    B7_MULTICHOICE,
    INSTRUCT_8B,
    INSTRUCT_8B_V2,
    DISTILLED_REASONING_3B,
    EFFICIENT_1GPU_1DAY,
    MERGE_GENERALIST,
    LOCAL_INSTRUCT,
    LOCAL_REASONING,
    LOCAL_EFFICIENT,
    LOCAL_MERGING,
)

SCHEDULES: dict[str, Schedule] = {
    "mainnet": SCHEDULE,
    "local": LOCAL_SCHEDULE,
    "efficient-1gpu": EFFICIENT_SCHEDULE,
    "merging": MERGING_SCHEDULE,
    "seeds": SEEDS_SCHEDULE,
    "seeds-local": SEEDS_LOCAL_SCHEDULE,
}
_SCHEDULES = SCHEDULES


def _check_ids_and_names(definitions: tuple[Competition, ...]) -> None:
    """One id per name and one name per id across every definition, periods included.

    (The records already check shares, weights and ids within one schedule entry.)
    """
    by_id: dict[int, str] = {}
    by_name: dict[str, int] = {}
    for c in definitions:
        if by_id.setdefault(c.id, c.name) != c.name or by_name.setdefault(c.name, c.id) != c.id:
            raise ConfigError(f"competition {c.name} (id {c.id}) clashes with another definition")


_check_ids_and_names(ALL_COMPETITIONS)


def get_schedule(name: str) -> Schedule:
    """The schedule called `name`: "mainnet" (subnet 37), "local" (devnet, demo, tests), or the
    seeds' competitions: "efficient-1gpu", "merging", "seeds" (both) and "seeds-local" (their
    tiny twins, for the devnet and `make demo-seeds`).

    Raises:
        UnknownIdError: not a known schedule name.
    """
    try:
        return _SCHEDULES[name]
    except KeyError:
        raise UnknownIdError(
            f"unknown schedule {name!r}; known: {', '.join(_SCHEDULES)}", schedule=name
        ) from None


def active_competitions(block: int, schedule: Schedule = SCHEDULE) -> list[CompetitionShare]:
    """The competitions and reward shares in force at `block` (shares sum to 1)."""
    return list(schedule.active_at(block).competitions)


def _matches(competition: Competition, key: str | int) -> bool:
    if isinstance(key, int):
        return competition.id == key
    return competition.name.upper() == key.upper()


def _candidates(schedule: Schedule) -> list[Competition]:
    """Schedule definitions, latest entry first, then every other known definition."""
    found = [s.competition for e in reversed(schedule.entries) for s in e.competitions]
    return found + list(reversed(ALL_COMPETITIONS))


def _unknown(key: str | int, known: list[Competition], block: int | None = None) -> UnknownIdError:
    names = sorted({c.name for c in known})
    ids = sorted({c.id for c in known})
    if block is None:
        message = f"unknown competition {key!r}; known: {', '.join(names)} (ids {ids})"
    else:
        message = (
            f"competition {key!r} is not active at block {block:,}; "
            f"active: {', '.join(names)} (ids {ids})"
        )
    if isinstance(key, str):
        close = difflib.get_close_matches(key.upper(), names, n=1, cutoff=0.5)
        if close:
            message += f"; did you mean {close[0]!r}?"
    return UnknownIdError(message, competition=key)


def get_competition(
    name_or_id: str | int, *, block: int | None = None, schedule: Schedule = SCHEDULE
) -> Competition:
    """Look a competition up by name (case-insensitive) or id (an int or a string of digits).

    Args:
        name_or_id: e.g. "INSTRUCT_8B", 3 or "3".
        block: when given, the definition in force at that block in `schedule`; it must be
            active then. When None, the latest definition in `schedule`, else any known one.
        schedule: the schedule to read.

    Returns:
        The competition definition.

    Raises:
        UnknownIdError: no such competition, or (with `block`) not active at that block. The
            message lists the known names and suggests the nearest.
    """
    key: str | int = name_or_id
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if block is not None:
        active = [s.competition for s in schedule.active_at(block).competitions]
        for competition in active:
            if _matches(competition, key):
                return competition
        raise _unknown(key, active, block)
    candidates = _candidates(schedule)
    for competition in candidates:
        if _matches(competition, key):
            return competition
    raise _unknown(key, candidates)


def protocol_for(competition: Competition, *, block: int | None = None) -> ScoringProtocol:
    """The scoring protocol a validator scores `competition` under.

    The protocol of the schedule period that holds this very definition (at `block` when
    given): the mainnet periods run `reference-3.1`, the local ones `next`, the seeds' ones
    `seeds-helm`. A definition in no schedule is scored under `next`.
    """
    for schedule in _SCHEDULES.values():
        if block is not None:
            entry = schedule.active_at(block)
            if any(s.competition == competition for s in entry.competitions):
                return entry.protocol
            continue
        for entry in reversed(schedule.entries):
            if any(s.competition == competition for s in entry.competitions):
                return entry.protocol
    return NEXT


__all__ = [
    "ALL_COMPETITIONS",
    "EFFICIENT_SCHEDULE",
    "INSTRUCT_ONLY_BLOCK",
    "LOCAL_SCHEDULE",
    "MERGING_SCHEDULE",
    "REASONING_BLOCK",
    "SCHEDULE",
    "SCHEDULES",
    "SEEDS_LOCAL_SCHEDULE",
    "SEEDS_SCHEDULE",
    "active_competitions",
    "get_competition",
    "get_schedule",
    "protocol_for",
]
