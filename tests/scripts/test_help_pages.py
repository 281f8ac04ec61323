"""Every tool's --help: plain text that shows defaults, no markup, no flags that do not exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ["scripts/demo.py", "scripts/devnet.py", "scripts/evaluate_model.py", "scripts/make_tiny_model.py",
         "scripts/merge_models.py", "scripts/run_benchmarks.py", "scripts/start_validator.py",
         "scripts/upload_model.py", "neurons/miner.py", "neurons/validator.py"]


def _help(*args: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / args[0]), *args[1:], "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                            "HF_HUB_OFFLINE": "1", "COLUMNS": "100", "HOME": "/nonexistent"})
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize("tool", TOOLS)
def test_help_is_plain_text(tool):
    out = _help(tool)
    assert "``" not in out  # reST markup of a docstring
    description = out.split("\n\n")[1]
    assert not description.startswith(("`", "*", ":")), description
    assert "(default:" in out or tool == "scripts/devnet.py"  # its defaults are on each command's page


def test_devnet_help_names_the_flag_that_exists():
    out = _help("scripts/devnet.py")
    assert "--chain devnet:PATH" in out and "--subtensor.network" not in out
    init = " ".join(_help("scripts/devnet.py", "init").split())
    assert "(default: 12.0)" in init and "(default: 1)" in init
    register = " ".join(_help("scripts/devnet.py", "register").split())
    assert "(default: ~/.bittensor/wallets)" in register


def test_evaluate_model_help_shows_each_default():
    out = " ".join(_help("scripts/evaluate_model.py").split())
    for text in ("--device DEVICE auto (cuda if usable, else cpu), cpu, cuda or cuda:N (default: cpu)",
                 "--batch-tokens N token budget of one batch (default: 8192)",
                 "--eval-samples N at most N samples per task"):
        assert text in out
    assert "--samples" not in out.replace("--eval-samples", "")  # a hidden alias


def test_every_validator_flag_has_help_and_its_default():
    out = _help("neurons/validator.py")
    flags = re.findall(r"^  (--[\w.-]+)", out, flags=re.M)
    assert len(flags) > 30
    for flag in flags:
        block = out.split(f"\n  {flag}", 1)[1].split("\n  --", 1)[0]
        assert len(block.split()) > 2, flag  # a help text, not just a metavar
