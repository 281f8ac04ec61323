"""`neurons/validator.py` as an operator meets it: help, and one-line errors for bad settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "neurons" / "validator.py"


def _run(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    # A fresh HOME: nothing may read or write the user's wallets or state.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "COLUMNS": "100", **env}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_help_lists_the_operator_flags(tmp_path):
    result = _run("--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for flag in ("--wallet.name", "--wallet.hotkey", "--chain", "--hub", "--netuid", "--schedule", "--offline",
                 "--dont-set-weights", "--model-dir", "--state-path", "--batch-tokens", "--eval-samples",
                 "--wandb.project", "--intervals.weights-s", "--subtensor.network", "--subtensor.chain-endpoint",
                 "--logging.debug", "--logging.trace"):
        assert flag in out, flag
    assert "{str,null}" not in out and "null" not in out and "[JSON]" not in out
    assert out.splitlines()[0] == "usage: neurons/validator.py [FLAGS]"  # not a 23-line dump
    assert out.splitlines()[2].startswith("The subnet 37 validator:")
    for form in ("finney", "test", "local", "ws://HOST:PORT", "wss://HOST:PORT", "devnet:PATH"):
        assert form in out, form
    assert "(default: 16384)" in out and "(default: ~/.finetune/models)" in out
    assert "FINETUNE_" in out


# What a new operator tried; each was accepted and became every miner's failed evaluation.
BAD_SETTINGS = [
    (("--batch-tokens", "-1"), "error: --batch-tokens: must be at least 1 (got -1)"),
    (("--device", "gpu"), "error: --device: must be auto, cpu, cuda or cuda:N (got gpu)"),
    (("--model-deadline-s", "-5"), "error: --model-deadline-s: must be greater than 0 (got -5)"),
    (("--wandb.mode", "on"), "error: --wandb.mode: must be one of online, offline, disabled (got on)"),
    (("--device", "cuda"), "error: --device: no usable CUDA device on this machine"),
    (("--batch-token", "3"), "error: unknown flag --batch-token; did you mean --batch-tokens?"),
    (("--chain", "bogus"), "error: --chain: must be finney, test, local, ws://HOST:PORT, wss://HOST:PORT or "
                           "devnet:PATH (got bogus)"),
    (("--chain", "devnet:missing.sqlite"), "error: --chain: devnet file 'missing.sqlite' does not exist"),
    (("--subtensor.chain_endpoint", "finney"),
     "error: --subtensor.chain-endpoint: must start with ws:// or wss:// (got finney)"),
]


@pytest.mark.parametrize(("args", "message"), BAD_SETTINGS, ids=[" ".join(a) for a, _ in BAD_SETTINGS])
def test_a_bad_setting_is_one_line_and_exit_2_before_anything_runs(tmp_path, args, message):
    state = tmp_path / "state.json"
    # CUDA_VISIBLE_DEVICES="": no usable CUDA here, even on a machine with a GPU.
    result = _run(*args, "--state-path", str(state), tmp_path=tmp_path, CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert not state.exists()  # nothing ran, so nothing reached a miner's record


def test_bad_values_are_each_reported_on_one_line(tmp_path):
    result = _run("--netuid", "abc", "--batch-tokens", "lots", "--wandb.mode", "on",
                  "--intervals.weights-s", "0", tmp_path=tmp_path, FINETUNE_MAX_ROUNDS="0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines)
    assert sorted(line.split(":")[1].strip() for line in lines) == sorted(
        ["--netuid", "--batch-tokens", "--wandb.mode", "--intervals.weights-s", "FINETUNE_MAX_ROUNDS"])


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
