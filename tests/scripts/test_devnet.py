"""scripts/devnet.py: init, register (address, existing wallet, generated wallet), advance, show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from finetune.chain import DevnetChain, create_dev_wallet
from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "devnet.py"


main = load_script("devnet").main


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps tables at 80 columns otherwise


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "dev.db"
    assert (
        main(["init", str(path), "--block-time", "2", "--netuid", "4", "--commit-rate-limit", "0"])
        == 0
    )
    return path


def test_init_refuses_existing_file(db, capsys):
    assert main(["init", str(db)]) == 1
    assert "already exists" in capsys.readouterr().out


def test_register_by_address_and_advance(db, capsys):
    assert main(["register", str(db), "--hotkey", "5Fake", "--stake", "12.5", "--validator"]) == 0
    assert "uid 0" in capsys.readouterr().out
    chain = DevnetChain(db, create=False)
    neuron = chain.metagraph().by_hotkey("5Fake")
    assert neuron.stake == 12.5 and neuron.validator_permit and chain.netuid == 4
    before = chain.current_block()
    assert main(["advance", str(db), "50"]) == 0
    assert chain.current_block() >= before + 50


def test_generate_and_existing_wallet(db, tmp_path):
    wallets = tmp_path / "wallets"
    assert main(["register", str(db), "--generate", "miner1", "--wallet.path", str(wallets)]) == 0
    assert (wallets / "miner1" / "coldkeypub.txt").is_file()
    assert (wallets / "miner1" / "hotkeys" / "default").is_file()
    wallet = create_dev_wallet("miner1", path=wallets)  # reuses the keys just written
    chain = DevnetChain(db, create=False)
    assert chain.metagraph().hotkeys == (wallet.hotkey.ss58_address,)
    # Registering the same wallet by name finds the same hotkey and keeps its uid.
    argv = [
        "register",
        str(db),
        "--wallet.name",
        "miner1",
        "--wallet.path",
        str(wallets),
        "--stake",
        "3",
    ]
    assert main(argv) == 0
    graph = chain.metagraph()
    assert graph.uids == (0,) and graph.neurons[0].stake == 3.0


def test_missing_wallet_or_file_is_a_clean_error(db, tmp_path, capsys):
    assert main(["register", str(db), "--wallet.name", "nope", "--wallet.path", str(tmp_path)]) == 1
    assert "no hotkey file" in capsys.readouterr().out
    assert main(["show", str(tmp_path / "absent.db")]) == 1


def test_show_lists_neurons_commitments_and_weights(db, capsys):
    chain = DevnetChain(db, create=False)
    chain.register("hk-validator", stake=100, validator_permit=True)
    chain.register("hk-miner")
    chain.publish_commitment("hk-miner", "ns:model:abc")
    chain.set_weights("hk-validator", {1: 1.0}, version_key=77)
    capsys.readouterr()
    assert main(["show", str(db)]) == 0
    out = capsys.readouterr().out
    for text in (
        "hk-validator",
        "hk-miner",
        "ns:model:abc",
        "netuid 4",
        "recent weights",
        "77",
        "1.000",
    ):
        assert text in out


def test_runs_as_a_script(db):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "advance", str(db), "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "block" in done.stdout
