import math

from finetune.competition import EpsilonSpec
from finetune.scoring import EvalRecord, append_record, should_retry

INF = math.inf
SPEC = EpsilonSpec(start=0.05, end=0.01, decay_blocks=1000)


def _retry(history, *, model_block=5_000, winner_score=0.5, winner_block=1_000, now=10_000, **kw):
    return should_retry(
        [EvalRecord(block=b, score=s) for b, s in history],
        model_block=model_block,
        winner_score=winner_score,
        winner_block=winner_block,
        block_now=now,
        epsilon_spec=SPEC,
        **kw,
    )


def test_never_evaluated():
    assert _retry([])


def test_all_failed_gets_one_retry():
    assert _retry([(9_000, INF)])
    assert not _retry([(9_000, INF), (9_360, INF)])


def test_lost_on_raw_score_is_not_retried():
    assert not _retry([(9_000, 0.6)])
    assert not _retry([(9_000, 0.5)])


def test_beat_raw_but_lost_to_epsilon():
    # Winner fully decayed: adjusted 0.5 * 0.99 = 0.495.
    assert _retry([(9_000, 0.49)])
    assert not _retry([(9_000, 0.496)])
    # The last finite score counts, even after a later failure.
    assert _retry([(8_000, 0.7), (8_500, 0.49), (9_000, INF)])
    # A fresh winner still has its full advantage: 0.5 * 0.95 = 0.475.
    assert not _retry([(9_000, 0.49)], winner_block=9_900, model_block=9_950)


def test_model_not_later_than_winner_retries_when_it_beat_the_raw_score():
    assert _retry([(9_000, 0.499)], model_block=900)


def test_failed_winner_and_changed_tasks():
    assert _retry([(9_000, 0.9)], winner_score=INF)
    history = [EvalRecord(block=9_000, score=0.9, fingerprint="v1")]
    common = dict(model_block=5_000, winner_score=0.5, winner_block=1, block_now=10_000)
    assert should_retry(history, epsilon_spec=SPEC, fingerprint="v2", **common)
    assert not should_retry(history, epsilon_spec=SPEC, fingerprint="v1", **common)


def test_history_is_bounded_and_json_keeps_inf():
    history: tuple[EvalRecord, ...] = ()
    for block in range(5):
        history = append_record(history, EvalRecord(block=block, score=INF))
    assert [r.block for r in history] == [2, 3, 4]
    restored = EvalRecord.model_validate_json(history[-1].model_dump_json())
    assert restored == history[-1] and math.isinf(restored.score)
