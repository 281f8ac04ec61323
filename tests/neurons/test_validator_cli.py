"""`neurons/validator.py` as an operator meets it: help, and one-line errors for bad settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "neurons" / "validator.py"


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    # A fresh HOME: nothing may read or write the user's wallets or state.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_help_lists_the_operator_flags(tmp_path):
    result = _run("--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    for flag in ("--wallet.name", "--wallet.hotkey", "--chain", "--hub", "--netuid", "--schedule", "--offline",
                 "--model-dir", "--state-path", "--batch-tokens", "--wandb.project", "--intervals.weights-s"):
        assert flag in result.stdout, flag


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--chain", "bogus"), "error: unknown chain 'bogus'; expected one of: finney"),
        (("--chain", "devnet:missing.sqlite"), "error: devnet file 'missing.sqlite' does not exist"),
    ],
)
def test_bad_endpoint_is_one_line_and_exit_2(tmp_path, args, message):
    result = _run(*args, tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.stderr + result.stdout


def test_bad_values_are_each_reported_on_one_line(tmp_path):
    result = _run("--netuid", "abc", "--batch-tokens", "lots", tmp_path=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["--netuid", "--batch-tokens"]
    assert all(line.startswith("error: ") for line in lines)


def test_daemon_runs_a_round_on_a_local_subnet_and_exits_cleanly(tmp_path, tiny_model_dir):
    """The whole wiring of build.py: devnet chain, directory hub, threads, worker processes."""
    import json

    from finetune.chain import DevnetChain
    from finetune.storage import DirModelStore
    from tests.validator.helpers import publish_model

    chain = DevnetChain(tmp_path / "devnet.sqlite", netuid=1, block_time_s=3600.0, commit_rate_limit=0)
    store = DirModelStore(tmp_path / "hub")
    for hotkey in ("vali", "miner"):
        chain.register(hotkey, stake=10.0, validator_permit=hotkey == "vali")
    publish_model(chain, store, tiny_model_dir, hotkey="miner", repo_id="m/tiny", competition_id=102)
    chain.advance(5)
    state = tmp_path / "state.json"
    result = _run(
        "--chain", f"devnet:{tmp_path / 'devnet.sqlite'}", "--hub", f"dir:{tmp_path / 'hub'}",
        "--netuid", "1", "--schedule", "local", "--offline", "--device", "cpu", "--max-rounds", "1",
        "--max-samples", "2", "--min-free-gb", "0", "--model-dir", str(tmp_path / "models"),
        "--state-path", str(state), "--heartbeat-path", str(tmp_path / "beat"),
        "--intervals.idle-s", "0.5", tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads(state.read_text())
    assert saved["models"]["miner"]["status"] == "ready"
    assert saved["competitions"]["102"]["last_window"] >= 0
    assert len(saved["competitions"]["102"]["history"]["miner"]) == 1
    assert (tmp_path / "beat").exists()
