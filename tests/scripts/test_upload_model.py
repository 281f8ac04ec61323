"""scripts/upload_model.py: a wallet on disk, a devnet and a folder store; errors are one line."""

from __future__ import annotations

import pytest

from finetune.chain import DevnetChain, ModelId, decode_commitment
from finetune.storage import DirModelStore
from tests.scripts import load_script


@pytest.fixture(scope="module")
def cli():
    return load_script("upload_model")


@pytest.fixture(scope="module")
def wallet_dir(tmp_path_factory):
    import bittensor as bt

    path = tmp_path_factory.mktemp("wallets")
    wallet = bt.Wallet(name="miner", hotkey="hot", path=str(path))
    wallet.create_new_coldkey(use_password=False, suppress=True, overwrite=True)
    wallet.create_new_hotkey(use_password=False, suppress=True, overwrite=True)
    return path, wallet.hotkey.ss58_address


def _argv(model, tmp_path, wallet_path, *extra):
    return [
        "--model", str(model), "--repo", "miner/tiny", "--competition", "LOCAL_INSTRUCT",
        "--wallet.name", "miner", "--wallet.hotkey", "hot", "--wallet.path", str(wallet_path),
        "--chain", f"devnet:{tmp_path / 'chain.db'}", "--hub", f"dir:{tmp_path / 'hub'}",
        "--netuid", "1", "--schedule", "local", *extra,
    ]  # fmt: skip


def test_uploads_and_commits(cli, tiny_model_dir, tmp_path, wallet_dir, capsys, caplog):
    wallet_path, hotkey = wallet_dir
    DevnetChain(tmp_path / "chain.db", netuid=1).register(hotkey)
    with caplog.at_level("INFO"):
        assert cli.main(_argv(tiny_model_dir, tmp_path, wallet_path)) == 0
    out = capsys.readouterr().out
    assert "committed miner:tiny:" in out and "miner/tiny is public" in out
    assert out.count("committed") == 1
    # The result is printed once: the library's log says the steps, not the result again.
    logged = [r.getMessage() for r in caplog.records if r.levelname != "DEBUG"]
    assert any("pushed miner/tiny@" in m for m in logged)
    assert not any("committed" in m for m in logged), logged
    data, _ = DevnetChain(tmp_path / "chain.db", create=False).read_commitment(hotkey)
    model_id = decode_commitment(data)
    assert isinstance(model_id, ModelId) and model_id.competition_id == 101
    public = DirModelStore(tmp_path / "hub", read_private=False)
    assert public.revision_info("miner/tiny", model_id.commit).files


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unregistered", "is not registered on subnet 1"),
        ("no_wallet", "hotkeys/nobody"),
        ("long_repo", "at most 38 characters"),
        ("no_devnet", "does not exist"),
    ],
)
def test_errors_are_one_line_with_exit_2(cli, tiny_model_dir, tmp_path, wallet_dir, capsys, case, expected):
    wallet_path, hotkey = wallet_dir
    if case != "no_devnet":
        DevnetChain(tmp_path / "chain.db", netuid=1)
    argv = _argv(tiny_model_dir, tmp_path, wallet_path)
    if case == "no_wallet":
        argv[argv.index("hot")] = "nobody"
    if case == "long_repo":
        argv[argv.index("miner/tiny")] = "miner/" + "x" * 40
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err


def test_hf_hub_without_a_token_fails_before_anything(cli, tiny_model_dir, tmp_path, wallet_dir, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    argv = _argv(tiny_model_dir, tmp_path, wallet_dir[0])
    argv[argv.index(f"dir:{tmp_path / 'hub'}")] = "hf"
    assert cli.main(argv) == 2
    assert "hf auth login" in capsys.readouterr().err


def test_missing_flags_exit_2(cli, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["--model", "x"])
    assert caught.value.code == 2
    assert "--repo: field required" in capsys.readouterr().err
