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


def test_seed_schedules_run_the_helm_protocol_and_leave_the_others_alone():
    from finetune.protocol import NEXT, REFERENCE_31, SEEDS

    for name in ("efficient-1gpu", "merging", "seeds", "seeds-local"):
        entry = comps.get_schedule(name).active_at(10**9)
        assert entry.protocol is SEEDS
        assert all(s.competition.aggregation.value == "helm" for s in entry.competitions)
    assert _shares(0, comps.get_schedule("seeds")) == {"EFFICIENT_1GPU_1DAY": 0.5, "MERGE_GENERALIST": 0.5}
    assert _shares(0, comps.SEEDS_LOCAL_SCHEDULE) == {"LOCAL_EFFICIENT": 0.5, "LOCAL_MERGING": 0.5}
    # Its own weights key and name; `next` and the reference are untouched.
    assert SEEDS.weights_version_key not in (NEXT.weights_version_key, REFERENCE_31.weights_version_key)
    assert (NEXT.weights.ranking, REFERENCE_31.weights.ranking) == ("win_rate", "win_rate")
    assert SEEDS.model_copy(update={"name": NEXT.name, "weights_version_key": NEXT.weights_version_key,
                                    "weights": NEXT.weights}) == NEXT
    assert all(e.protocol is REFERENCE_31 for e in comps.SCHEDULE.entries)
    assert comps.protocol_for(comps.LOCAL_MERGING) is SEEDS
    assert comps.protocol_for(comps.LOCAL_INSTRUCT) is NEXT


def test_a_helm_competition_needs_a_helm_protocol():
    from finetune.competition import CompetitionShare, ScheduleEntry
    from finetune.protocol import NEXT

    with pytest.raises(ValueError, match="ranks by win_rate"):
        ScheduleEntry(start_block=0, protocol=NEXT,
                      competitions=(CompetitionShare(competition=comps.LOCAL_MERGING, reward_share=1.0),))
