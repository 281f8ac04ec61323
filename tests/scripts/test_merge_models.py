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


def _published(tmp_path, tiny_model_dir, *, pin=True):
    from finetune.competition import Expert, ExpertList
    from finetune.storage import DirModelStore
    from finetune.tiny_model import build_tiny_model

    store = DirModelStore(tmp_path / "hub")
    folders = [tiny_model_dir, build_tiny_model(tmp_path / "other", seed=1)]
    entries = []
    for index, folder in enumerate(folders):
        repo = f"experts/e{index}"
        revision = store.upload(folder, repo, private=False)
        entries.append(Expert(repo=repo, revision=revision if pin else None, license="apache-2.0"))
    listed = ExpertList(competition="LOCAL_MERGING", experts=tuple(entries))
    path = tmp_path / "experts.json"
    path.write_text(listed.model_dump_json())
    return path, entries


def test_merges_a_published_expert_list_and_declares_it(cli, tiny_model_dir, tmp_path, capsys):
    from finetune.submission import parse_submission

    path, entries = _published(tmp_path, tiny_model_dir)
    out = tmp_path / "merged"
    code = cli.main(["--method", "linear", "--experts", str(path), "--hub", f"dir:{tmp_path / 'hub'}",
                     "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    manifest = parse_submission((out / "submission.json").read_bytes())
    assert manifest.method == "linear" and manifest.base is None and manifest.recalibration is None
    assert [(e.repo, e.revision, e.license) for e in manifest.experts] == [
        (e.repo, e.revision, "apache-2.0") for e in entries]
    assert manifest.peak_memory_bytes > 0 and manifest.merge_seconds >= 0
    assert "with submission.json" in capsys.readouterr().out


def test_an_unpinned_list_needs_a_pin_and_experts_exclude_models(cli, tiny_model_dir, tmp_path, capsys):
    path, _ = _published(tmp_path, tiny_model_dir, pin=False)
    hub = f"dir:{tmp_path / 'hub'}"
    assert cli.main(["--method", "linear", "--experts", str(path), "--hub", hub, "--out", str(tmp_path / "o")]) == 2
    assert "pins no revision of experts/e0; pass --pin" in capsys.readouterr().err
    assert cli.main(["--method", "linear", "--experts", "LOCAL_MERGING", "--model", "x",
                     "--out", str(tmp_path / "o")]) == 2
    assert "no --model or --base" in capsys.readouterr().err
    assert cli.main(["--method", "linear", "--experts", "LOCAL_INSTRUCT", "--out", str(tmp_path / "o")]) == 2
    assert "publishes no expert list" in capsys.readouterr().err
