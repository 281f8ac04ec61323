"""Chain records, the deadline helper, wallet addresses and open_chain dispatch."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from finetune.chain import (
    BittensorChain,
    ChainClient,
    MetagraphSnapshot,
    NeuronInfo,
    call_with_deadline,
    hotkey_address,
    open_chain,
)
from finetune.errors import ChainTimeout, ConfigError


def test_snapshot_helpers():
    a = NeuronInfo(0, "hk-a", 1.0, True)
    b = NeuronInfo(1, "hk-b", 2.0, False, "data", 9)
    graph = MetagraphSnapshot(block=10, netuid=2, neurons=(a, b))
    assert graph.uids == (0, 1) and graph.hotkeys == ("hk-a", "hk-b")
    assert graph.by_hotkey("hk-b") is b and graph.by_hotkey("zz") is None
    assert graph.by_uid(0) is a and graph.by_uid(5) is None
    with pytest.raises(AttributeError):
        a.stake = 3.0  # frozen


def test_deadline_returns_value_and_reraises_errors():
    assert call_with_deadline(lambda: 42, timeout_s=1, what="x") == 42
    with pytest.raises(KeyError):
        call_with_deadline(lambda: {}["missing"], timeout_s=1, what="x")


def test_deadline_gives_up_on_a_stuck_call():
    release = threading.Event()
    start = time.monotonic()
    with pytest.raises(ChainTimeout, match="stuck did not return within 0.1s") as info:
        call_with_deadline(lambda: release.wait(30), timeout_s=0.1, what="stuck")
    assert time.monotonic() - start < 1
    assert info.value.reason == "chain_timeout"
    release.set()


def test_hotkey_address_shapes():
    assert hotkey_address("5Abc") == "5Abc"
    wallet = SimpleNamespace(hotkey=SimpleNamespace(ss58_address="5Hot"))
    assert hotkey_address(wallet) == "5Hot"
    assert hotkey_address(SimpleNamespace(ss58_address="5Signer")) == "5Signer"
    with pytest.raises(ConfigError):
        hotkey_address(object())


def test_open_chain_builds_a_lazy_bittensor_client():
    client = open_chain("ws://127.0.0.1:1", netuid=3, timeout_s=2)
    assert isinstance(client, BittensorChain) and isinstance(client, ChainClient)
    assert client.netuid == 3 and client.timeout_s == 2
    with pytest.raises(ConfigError, match="devnet:PATH"):
        open_chain("http://example.org", netuid=3)


def test_importing_the_package_does_not_import_bittensor():
    code = "import sys, finetune.chain; print('bittensor' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
