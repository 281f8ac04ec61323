import hashlib

import pytest

from finetune.scoring import fallback_seed, sync_window_start, window_seed

HASH = "0x" + "ab" * 32


def test_window_start():
    assert sync_window_start(3_138_611) == 3_138_611
    assert sync_window_start(3_138_611 + 359) == 3_138_611
    assert sync_window_start(3_138_611 + 360) == 3_138_611 + 360
    assert sync_window_start(25, genesis=0, window=10) == 20
    with pytest.raises(ValueError):
        sync_window_start(5, window=0)


def test_window_seed_is_sha256_of_the_hex_string():
    expected = int(hashlib.sha256(HASH.encode()).hexdigest(), 16)
    assert window_seed(HASH) == expected
    assert window_seed(HASH.upper().replace("0X", "0x")) == expected
    assert window_seed(HASH[2:]) == expected  # prefix-less clients agree
    assert window_seed("0x" + "cd" * 32) != expected


@pytest.mark.parametrize("bad", ["", "0x", "0xzz", "hello", None, b"0xab"])
def test_window_seed_rejects_non_hex(bad):
    with pytest.raises(ValueError):
        window_seed(bad)


def test_fallback_seed_is_deterministic():
    assert fallback_seed(100) == fallback_seed(100) != fallback_seed(460)
    assert fallback_seed(100) >= 0
