import constants
from finetune import __version__, version_key


def test_chain_facts():
    assert constants.NETUID == 37
    assert constants.SUBNET_GENESIS_BLOCK == 3_138_611
    assert constants.SYNC_WINDOW_BLOCKS == 360
    assert constants.BLOCK_TIME_S == 12


def test_repo_id_room_matches_spec_formula():
    assert constants.MAX_REPO_ID_LENGTH == 128 - 40 - 44 - 2 - 4 == 38


def test_scoring_parameters():
    assert constants.EMA_ALPHA == 0.9
    assert constants.WEIGHT_THRESHOLD == 0.18
    assert constants.KEEP_TOP_MODELS == 3
    assert constants.EVAL_HISTORY_LENGTH == 3


def test_timings():
    assert constants.MODEL_EVAL_DEADLINE_S == 720
    assert constants.WEIGHTS_INTERVAL_S == 3600
    assert constants.METAGRAPH_SYNC_S == constants.UID_CHECK_INTERVAL_S == 1200


def test_version_key_follows_the_package_version():
    assert constants.WEIGHTS_VERSION_KEY == version_key(__version__)
    assert version_key("1.2.3") == 1023


def test_all_is_complete():
    public = {n for n in dir(constants) if n.isupper()}
    assert public == set(constants.__all__)
