"""Chain records, wallet addresses and open_chain dispatch."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from finetune.chain import (
    BittensorChain,
    ChainClient,
    MetagraphSnapshot,
    NeuronInfo,
    hotkey_address,
    open_chain,
)
from finetune.errors import ConfigError


def test_snapshot_helpers():
    a = NeuronInfo(0, "hk-a", 1.0, True)
    b = NeuronInfo(1, "hk-b", 2.0, False, "data", 9)
    graph = MetagraphSnapshot(block=10, netuid=2, neurons=(a, b))
    assert graph.uids == (0, 1) and graph.hotkeys == ("hk-a", "hk-b")
    assert graph.by_hotkey("hk-b") is b and graph.by_hotkey("zz") is None
    assert graph.by_uid(0) is a and graph.by_uid(5) is None
    with pytest.raises(AttributeError):
        a.stake = 3.0  # frozen


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
