import pytest

import competitions as comps
from finetune.errors import UnknownIdError


def _shares(block, schedule=comps.SCHEDULE):
    return {s.competition.name: s.reward_share for s in comps.active_competitions(block, schedule)}


def test_mainnet_history():
    assert _shares(4_000_000) == {"B7_MULTICHOICE": 0.75, "INSTRUCT_8B": 0.25}
    assert _shares(4_675_162) == {"B7_MULTICHOICE": 0.75, "INSTRUCT_8B": 0.25}
    assert _shares(4_675_163) == {"INSTRUCT_8B": 1.0}
    assert _shares(5_158_631) == {"INSTRUCT_8B": 1.0}
    assert _shares(5_158_632) == {"DISTILLED_REASONING_3B": 1.0}
    assert _shares(10**9) == {"DISTILLED_REASONING_3B": 1.0}


def test_instruct_periods_by_block():
    # As the reference's schedule: the task weights changed when B7_MULTICHOICE ended.
    first = comps.get_competition("INSTRUCT_8B", block=comps.INSTRUCT_ONLY_BLOCK - 1)
    second = comps.get_competition(3, block=comps.INSTRUCT_ONLY_BLOCK)
    assert first is comps.INSTRUCT_8B and second is comps.INSTRUCT_8B_V2
    assert comps.INSTRUCT_ONLY_BLOCK < comps.REASONING_BLOCK
    # Without a block: the latest definition.
    assert comps.get_competition("INSTRUCT_8B") is comps.INSTRUCT_8B_V2


def test_lookup_by_name_id_and_digit_string():
    assert comps.get_competition("b7_multichoice") is comps.B7_MULTICHOICE
    assert comps.get_competition(4) is comps.DISTILLED_REASONING_3B
    assert comps.get_competition(" 4 ") is comps.DISTILLED_REASONING_3B
    # Definitions outside the schedule are still found without a block.
    assert comps.get_competition("MERGE_GENERALIST") is comps.MERGE_GENERALIST
    assert comps.get_competition(1) is comps.SN9_MODEL


def test_unknown_name_suggests_nearest():
    with pytest.raises(UnknownIdError) as err:
        comps.get_competition("INSTRUCT8B")
    assert "did you mean 'INSTRUCT_8B'" in str(err.value)
    assert "B7_MULTICHOICE" in str(err.value)
    with pytest.raises(KeyError):  # UnknownIdError is also a KeyError
        comps.get_competition(99)


def test_not_active_at_block():
    with pytest.raises(UnknownIdError, match="not active at block 4,000,000"):
        comps.get_competition(4, block=4_000_000)
    with pytest.raises(UnknownIdError):
        comps.get_competition("B7_MULTICHOICE", block=comps.REASONING_BLOCK)


def test_local_schedule():
    shares = _shares(0, comps.LOCAL_SCHEDULE)
    assert shares == {"LOCAL_INSTRUCT": 0.4, "LOCAL_REASONING": 0.6}
    assert comps.get_competition(101, block=5, schedule=comps.LOCAL_SCHEDULE).name == (
        "LOCAL_INSTRUCT"
    )
    local_ids = {s.competition.id for s in comps.active_competitions(0, comps.LOCAL_SCHEDULE)}
    mainnet_ids = {s.competition.id for e in comps.SCHEDULE.entries for s in e.competitions}
    assert not local_ids & mainnet_ids


def test_get_schedule():
    assert comps.get_schedule("mainnet") is comps.SCHEDULE
    assert comps.get_schedule("local") is comps.LOCAL_SCHEDULE
    with pytest.raises(UnknownIdError, match="mainnet"):
        comps.get_schedule("testnet")
