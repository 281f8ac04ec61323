"""The validator's settings through `main(argv)` and the generated parser, in process.

Aliases, the environment overlay, every check, did-you-mean, and the wiring of
`--offline` / `--dont-set-weights` into the loop.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from finetune.validator.cli import _leaves, flag_of, parse_validator_settings, validator_parser
from finetune.validator.settings import ValidatorSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def validator_main():
    spec = importlib.util.spec_from_file_location("validator_entry", ROOT / "neurons" / "validator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("FINETUNE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))


def errors(main, capsys, *argv: str) -> list[str]:
    assert main(list(argv)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    return err.strip().splitlines()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--subtensor.network", "test"], {"chain": "test"}),
        (["--subtensor.chain_endpoint", "wss://node.example:443"], {"chain": "wss://node.example:443"}),
        (["--subtensor.chain-endpoint", "ws://127.0.0.1:9944"], {"chain": "ws://127.0.0.1:9944"}),
        # bittensor's rule: the endpoint wins over the network name
        (["--subtensor.network", "finney", "--subtensor.chain_endpoint", "ws://10.0.0.1:9944"],
         {"chain": "ws://10.0.0.1:9944"}),
        (["--logging.debug"], {"log_level": "DEBUG"}),
        (["--logging.trace"], {"log_level": "DEBUG"}),
        (["--logging.debug", "--logging.trace"], {"log_level": "DEBUG"}),
        (["--log-level", "warning"], {"log_level": "WARNING"}),
        (["--netuid", "5"], {"netuid": 5}),
        (["--max-samples", "3"], {"eval_samples": 3}),
        (["--samples", "4"], {"eval_samples": 4}),
        (["--eval-samples", "5"], {"eval_samples": 5}),
        (["--batch_tokens", "64"], {"batch_tokens": 64}),
        (["--batch-tokens=128"], {"batch_tokens": 128}),
        (["--dont-set-weights"], {"dont_set_weights": True, "offline": False, "sets_weights": False}),
        (["--offline"], {"offline": True, "sets_weights": False}),
        ([], {"sets_weights": True, "chain": "finney", "device": "auto", "log_level": "INFO"}),
    ],
)
def test_flags_and_aliases_map_to_their_settings(argv, expected):
    settings = parse_validator_settings(argv)
    for name, value in expected.items():
        assert getattr(settings, name) == value, name


def test_nested_flags_and_wallet_aliases(tmp_path):
    settings = parse_validator_settings([
        "--wallet.name", "vali", "--wallet.hotkey", "hk", "--wallet.path", str(tmp_path),
        "--intervals.weights-s", "7", "--intervals.idle_s", "0.5", "--wandb.mode", "offline",
    ])
    assert (settings.wallet.name, settings.wallet.hotkey, settings.wallet.path) == ("vali", "hk", tmp_path)
    assert settings.intervals.weights_s == 7 and settings.intervals.idle_s == 0.5
    assert settings.wandb.mode == "offline"


def test_flags_overlay_the_environment(monkeypatch):
    monkeypatch.setenv("FINETUNE_WALLET__NAME", "from-env")
    monkeypatch.setenv("FINETUNE_WALLET__HOTKEY", "env-hotkey")
    monkeypatch.setenv("FINETUNE_BATCH_TOKENS", "256")
    monkeypatch.setenv("FINETUNE_OFFLINE", "true")
    settings = parse_validator_settings(["--wallet.name", "from-flag", "--no-offline"])
    assert settings.wallet.name == "from-flag" and settings.wallet.hotkey == "env-hotkey"
    assert settings.batch_tokens == 256 and settings.offline is False


def test_settings_are_frozen():
    settings = parse_validator_settings([])
    with pytest.raises(ValidationError):
        settings.batch_tokens = 1


def test_every_field_has_a_flag_and_a_description():
    parser_flags = {o for action in validator_parser()._actions for o in action.option_strings}
    for path, info in _leaves(ValidatorSettings):
        assert info.description, path
        assert flag_of(path) in parser_flags, path
    groups = [info for info in ValidatorSettings.model_fields.values()
              if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)]
    assert len(groups) == 4 and all(info.description for info in groups)  # the --help group titles


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--batch-tokens", "-1"], "error: --batch-tokens: must be at least 1 (got -1)"),
        (["--batch-tokens", "1.5"], "error: --batch-tokens: must be a whole number (got 1.5)"),
        (["--device", "gpu"], "error: --device: must be auto, cpu, cuda or cuda:N (got gpu)"),
        (["--model-deadline-s", "-5"], "error: --model-deadline-s: must be greater than 0 (got -5)"),
        (["--model-deadline-s", "inf"], "error: --model-deadline-s: must be a finite number (got inf)"),
        (["--wandb.mode", "on"], "error: --wandb.mode: must be one of online, offline, disabled (got on)"),
        (["--log-level", "loud"], "error: --log-level: must be one of critical, error, warning, info, debug "
                                  "(got loud)"),
        (["--hub", "s3://bucket"], "error: --hub: must be hf or dir:PATH (got s3://bucket)"),
        (["--hub", "dir:"], "error: --hub: dir: needs a folder after it (got dir:)"),
        (["--schedule", "testnet"], "error: --schedule: must be one of mainnet, local, efficient-1gpu, merging, "
         "seeds, seeds-local (got testnet)"),
        (["--chain", "ws://"], "error: --chain: ws:// needs a HOST:PORT after it (got ws://)"),
        (["--weights-chain", "finny"], "error: --weights-chain: must be finney, test, local, ws://HOST:PORT, "
                                       "wss://HOST:PORT or devnet:PATH (got finny)"),
        (["--subtensor.network", "finny"], "error: --subtensor.network: must be finney, test, local, "
                                           "ws://HOST:PORT, wss://HOST:PORT or devnet:PATH (got finny)"),
        (["--max-rounds", "0"], "error: --max-rounds: must be at least 1 (got 0)"),
        (["--max-samples", "0"], "error: --max-samples: must be at least 1 (got 0)"),
        (["--intervals.idle-s", "0"], "error: --intervals.idle-s: must be greater than 0 (got 0)"),
        (["--wandb.rounds-per-run", "0"], "error: --wandb.rounds-per-run: must be at least 1 (got 0)"),
        (["--min-free-gb", "-1"], "error: --min-free-gb: must be at least 0 (got -1)"),
        (["--chain", "finney", "--subtensor.network", "test"],
         "error: --subtensor.network: conflicts with --chain finney; give one of them"),
        (["--log-level", "info", "--logging.debug"],
         "error: --logging.debug: conflicts with --log-level info; give one of them"),
        (["--batch-token", "3"], "error: unknown flag --batch-token; did you mean --batch-tokens?"),
        (["--wallet.nam", "x"], "error: unknown flag --wallet.nam; did you mean --wallet.name?"),
        (["--intervals.weight_s", "3"], "error: unknown flag --intervals.weight_s; did you mean "
                                        "--intervals.weights-s?"),
        (["--zzzz"], "error: unknown flag --zzzz (--help lists the flags)"),
        (["stray"], "error: unexpected argument 'stray' (--help lists the flags)"),
        (["--batch-tokens"], "error: --batch-tokens: expected one argument"),
    ],
)
def test_each_problem_is_one_line_and_exit_2(validator_main, capsys, argv, line):
    assert errors(validator_main, capsys, *argv) == [line]


def test_every_problem_is_reported_at_once(validator_main, capsys, monkeypatch):
    monkeypatch.setenv("FINETUNE_INTERVALS__WEIGHTS_S", "soon")
    lines = errors(validator_main, capsys, "--batch-tokens", "-1", "--device", "gpu", "--model-deadline-s", "-5",
                   "--wandb.mode", "on")
    assert lines == [
        "error: --device: must be auto, cpu, cuda or cuda:N (got gpu)",
        "error: --batch-tokens: must be at least 1 (got -1)",
        "error: --model-deadline-s: must be greater than 0 (got -5)",
        "error: FINETUNE_INTERVALS__WEIGHTS_S: must be a number (got soon)",
        "error: --wandb.mode: must be one of online, offline, disabled (got on)",
    ]


def test_a_nested_env_value_that_is_not_json(validator_main, capsys, monkeypatch):
    monkeypatch.setenv("FINETUNE_WALLET", "{oops")
    assert errors(validator_main, capsys) == [
        "error: FINETUNE_WALLET: must be a JSON object (or set FINETUNE_WALLET__<FIELD> for one field)"]


def test_cuda_must_be_usable(validator_main, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    [line] = errors(validator_main, capsys, "--device", "cuda")
    assert line.startswith("error: --device: no usable CUDA device on this machine") and line.endswith("(got cuda)")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert errors(validator_main, capsys, "--device", "cuda:1") == [
        "error: --device: this machine has 1 CUDA device(s): cuda:0 to cuda:0 (got cuda:1)"]
    assert parse_validator_settings(["--device", "cuda:0"]).device == "cuda:0"


def test_help_is_plain(validator_main, capsys):
    assert validator_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "null" not in out and "{str" not in out and "(default: None)" not in out
    assert "(default: off)" in out  # a switch


def _build(monkeypatch, tmp_path, *argv):
    from finetune.chain import DevnetChain
    from finetune.validator import build

    DevnetChain(tmp_path / "devnet.sqlite", netuid=1)
    loads = []
    monkeypatch.setattr("finetune.chain.wallets.WalletSettings.load", lambda self: loads.append(self) or "wallet")
    settings = parse_validator_settings([
        "--chain", f"devnet:{tmp_path / 'devnet.sqlite'}", "--hub", f"dir:{tmp_path / 'hub'}", "--netuid", "1",
        "--schedule", "local", "--device", "cpu", "--model-dir", str(tmp_path / "models"),
        "--state-path", str(tmp_path / "state.json"), "--worker-memory-gb", "0", *argv])
    validator = build.build_validator(settings)
    return validator, loads


@pytest.mark.parametrize(
    ("argv", "sets_weights", "offline_data"),
    [([], True, False), (["--offline"], False, True), (["--dont-set-weights"], False, False),
     (["--offline", "--dont-set-weights"], False, True)],
)
def test_offline_and_dont_set_weights_are_wired_into_the_loop(monkeypatch, tmp_path, argv, sets_weights,
                                                               offline_data):
    validator, loads = _build(monkeypatch, tmp_path, *argv)
    assert validator.config.set_weights is sets_weights
    assert validator.config.data.offline is offline_data
    # Only setting weights signs anything: without it no wallet is needed.
    assert (validator.wallet == "wallet") is sets_weights and len(loads) == int(sets_weights)


@pytest.mark.parametrize("name", ["efficient-1gpu", "merging", "seeds", "seeds-local"])
def test_the_seed_schedules_are_accepted(name):
    assert ValidatorSettings(schedule=name).schedule == name
