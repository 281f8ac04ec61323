"""scripts/merge_models.py: flags reach the library; bad input is one line and exit code 2."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.scripts import load_script


@pytest.fixture(scope="module")
def cli():
    return load_script("merge_models")


def test_merges_with_all_flags(cli, tiny_model_dir, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    caplog.set_level("INFO")
    code = cli.main(
        [
            "--method", "dare", "--base", str(tiny_model_dir),
            "--model", str(tiny_model_dir), "--model", str(tiny_model_dir),
            "--weight", "0.5", "--weight", "0.25", "--density", "0.3", "--lambda", "2", "--seed", "4",
            "--dtype", "bfloat16", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("dare:") == 1 and str(out) in printed
    # The result is printed once, not logged again by the library.
    assert not any(str(out) in r.getMessage() for r in caplog.records if r.levelname != "DEBUG")
    report = json.loads((out / "merge_report.json").read_text())
    assert report["weights"] == [0.5, 0.25] and report["density"] == 0.3
    assert report["lam"] == 2.0 and report["seed"] == 4 and report["dtype"] == "bfloat16"
    # Every model equals the base, so every task vector is zero: the merge returns the base.
    base = load_file(tiny_model_dir / "model.safetensors")
    for name, tensor in load_file(out / "model.safetensors").items():
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, base[name].to(torch.bfloat16))


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--method", "tie"], "did you mean 'ties'"),
        (["--method", "ties"], "needs a base"),
        (["--method", "linear", "--weight", "1"], "1 weights for 2 models"),
        (["--method", "linear", "--model", "/nonexistent/model"], "is not a directory"),
    ],
)
def test_bad_input_is_one_line_exit_2(cli, tiny_model_dir, tmp_path, capsys, extra, needle):
    argv = [
        "--model",
        str(tiny_model_dir),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(tmp_path / "o"),
        *extra,
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1


def test_missing_flags_exit_2(cli, tmp_path):
    with pytest.raises(SystemExit) as info:
        cli.main(["--method", "linear", "--out", str(tmp_path / "o")])
    assert info.value.code == 2
