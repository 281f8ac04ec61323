"""Uploading to a devnet chain and a folder store: order, hashes, visibility, error messages."""

from __future__ import annotations

import shutil

import pytest

from competitions import LOCAL_INSTRUCT
from finetune.chain import DevnetChain, ModelId, decode_commitment
from finetune.errors import (
    ConfigError,
    InvalidCommitment,
    ModelRejected,
    NotRegistered,
    RateLimited,
    RepoNotFound,
    SpaceLimitExceeded,
    StorageError,
)
from finetune.mining.upload import (
    check_local_model,
    describe_error,
    require_hf_token,
    upload_model,
)
from finetune.storage import DirModelStore, content_hash, secure_hash

HOTKEY = "5HotkeyOfTheMinerUnderTest"


class Recorder:
    """Forwards to a store or chain and logs each call in a shared list."""

    def __init__(self, inner, log: list[str]) -> None:
        self._inner, self._log = inner, log

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            shown = [a for a in args if isinstance(a, bool)] + [v for v in kwargs.values() if isinstance(v, bool)]
            self._log.append(name + (f"({shown[0]})" if shown else ""))
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def devnet(tmp_path):
    chain = DevnetChain(tmp_path / "chain.db", netuid=1, commit_rate_limit=10)
    chain.register(HOTKEY)
    return chain


@pytest.fixture
def store(tmp_path):
    return DirModelStore(tmp_path / "hub")


def test_upload_commits_the_downloaded_revision_then_goes_public(tiny_model_dir, devnet, store, tmp_path):
    log: list[str] = []
    report = upload_model(
        tiny_model_dir, repo_id="miner/tiny", competition=LOCAL_INSTRUCT, wallet=HOTKEY,
        chain=Recorder(devnet, log), store=Recorder(store, log),
    )  # fmt: skip

    # Private push, verify by download, commit, read back, and only then public.
    assert log[log.index("upload(True)") :] == [
        "upload(True)", "download", "publish_commitment", "read_commitment", "set_private(False)",
    ]  # fmt: skip
    assert "set_private(False)" not in log[: log.index("publish_commitment")]

    data, block = devnet.read_commitment(HOTKEY)
    model_id = decode_commitment(data)
    assert isinstance(model_id, ModelId) and model_id == report.model_id
    assert (model_id.repo_id, model_id.competition_id) == ("miner/tiny", LOCAL_INSTRUCT.id)
    assert block == report.block
    # What a validator downloads at the committed revision hashes to the committed value.
    public = DirModelStore(store.root, read_private=False)
    snapshot = public.download("miner/tiny", model_id.commit, tmp_path / "validator")
    assert content_hash(snapshot) == report.content_hash == content_hash(tiny_model_dir)
    assert secure_hash(report.content_hash, HOTKEY) == model_id.secure_hash
    assert public.revision_info("miner/tiny", model_id.commit).total_bytes > 0  # public now


def test_a_public_repo_is_made_private_before_a_new_push(tiny_model_dir, devnet, store, tmp_path):
    upload_model(
        tiny_model_dir, repo_id="miner/tiny", competition=LOCAL_INSTRUCT, wallet=HOTKEY,
        chain=devnet, store=store,
    )  # fmt: skip
    devnet.advance(20)  # past the commitment rate limit
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "generation_config.json").write_text('{"do_sample": false}')
    log: list[str] = []
    report = upload_model(
        model, repo_id="miner/tiny", competition=LOCAL_INSTRUCT, wallet=HOTKEY,
        chain=devnet, store=Recorder(store, log),
    )  # fmt: skip
    assert log == ["set_private(True)", "upload(True)", "download", "set_private(False)"]
    assert decode_commitment(devnet.read_commitment(HOTKEY)[0]) == report.model_id
    assert report.content_hash == content_hash(model) != content_hash(tiny_model_dir)


def test_unregistered_hotkey_is_refused_before_any_push(tiny_model_dir, devnet, store):
    with pytest.raises(NotRegistered) as caught:
        upload_model(
            tiny_model_dir, repo_id="miner/tiny", competition=LOCAL_INSTRUCT, wallet="5Stranger",
            chain=devnet, store=store,
        )  # fmt: skip
    assert not any(store.root.iterdir())
    message = describe_error(caught.value)
    assert "5Stranger is not registered on subnet 1" in message and "register" in message


def test_repo_id_too_long_is_refused_with_the_limit(tiny_model_dir, devnet, store):
    with pytest.raises(InvalidCommitment) as caught:
        upload_model(
            tiny_model_dir, repo_id="miner/" + "x" * 40, competition=LOCAL_INSTRUCT, wallet=HOTKEY,
            chain=devnet, store=store,
        )  # fmt: skip
    message = describe_error(caught.value)
    assert message.startswith("invalid repo id") and "at most 38 characters" in message
    assert "\n" not in message
    with pytest.raises(InvalidCommitment):
        upload_model(
            tiny_model_dir, repo_id="no-slash", competition=LOCAL_INSTRUCT, wallet=HOTKEY,
            chain=devnet, store=store,
        )  # fmt: skip


def test_rate_limit_says_when_to_retry_and_keeps_the_repo_private(tiny_model_dir, devnet, store, tmp_path):
    upload_model(
        tiny_model_dir, repo_id="miner/first", competition=LOCAL_INSTRUCT, wallet=HOTKEY,
        chain=devnet, store=store,
    )  # fmt: skip
    with pytest.raises(RateLimited) as caught:
        upload_model(
            tiny_model_dir, repo_id="miner/second", competition=LOCAL_INSTRUCT, wallet=HOTKEY,
            chain=devnet, store=store,
        )  # fmt: skip
    blocks = caught.value.retry_after_blocks
    assert 0 < blocks <= 10
    message = describe_error(caught.value)
    assert f"retry in {blocks} blocks (about {max(1, round(blocks * 12 / 60))} min" in message
    assert "private" in message
    public = DirModelStore(store.root, read_private=False)
    revision = store.upload(tiny_model_dir, "miner/second")  # same files: the same revision
    with pytest.raises(RepoNotFound):
        public.revision_info("miner/second", revision)
    space = describe_error(SpaceLimitExceeded("full", retry_after_blocks=300))
    assert "space limit" in space and "retry in 300 blocks (about 60 min" in space


def test_constraint_violations_stop_the_upload(tiny_model_dir, devnet, store, tmp_path):
    tight = LOCAL_INSTRUCT.model_copy(
        update={"constraints": LOCAL_INSTRUCT.constraints.model_copy(update={"max_params": 1000})}
    )
    with pytest.raises(ModelRejected) as caught:
        upload_model(
            tiny_model_dir, repo_id="miner/tiny", competition=tight, wallet=HOTKEY,
            chain=devnet, store=store,
        )  # fmt: skip
    assert caught.value.reason == "bad_param_count"
    assert "constraints (bad_param_count)" in describe_error(caught.value)
    assert not any(store.root.iterdir())
    # Only uploaded files are checked: a pickle beside the weights is never pushed.
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "optimizer.pt").write_bytes(b"not uploaded")
    check_local_model(model, LOCAL_INSTRUCT)
    (model / "config.json").write_text('{"architectures": ["BertModel"], "model_type": "bert"}')
    with pytest.raises(ModelRejected, match="architectures") as caught:
        check_local_model(model, LOCAL_INSTRUCT)
    assert caught.value.reason == "bad_architecture"


def test_missing_hf_token_is_reported_up_front(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ConfigError) as caught:
        require_hf_token()
    assert "hf auth login" in describe_error(caught.value)
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    require_hf_token()


def test_store_errors_are_one_line():
    message = describe_error(StorageError("boom", reason="hub_timeout"))
    assert message == "model store failed (hub_timeout): boom"


def test_upload_commits_the_hash_of_the_protocols_file_set(tiny_model_dir, devnet, store, tmp_path):
    # Mainnet validators hash what the reference's download fetches: for this model (saved by
    # transformers 5, tokenizer class TokenizersBackend) not tokenizer.json.
    report = upload_model(
        tiny_model_dir, repo_id="miner/ref", competition=LOCAL_INSTRUCT, wallet=HOTKEY,
        chain=devnet, store=store, file_set="reference",
    )  # fmt: skip
    snapshot = store.download("miner/ref", report.revision, tmp_path / "snapshot")
    assert report.content_hash == content_hash(snapshot, file_set="reference")
    assert report.content_hash != content_hash(snapshot)
    assert report.model_id.secure_hash == secure_hash(report.content_hash, HOTKEY)


def test_files_the_reference_cannot_hash_stop_the_upload_before_the_push(
    tiny_model_dir, devnet, store, tmp_path
):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}')
    for name in ("added_tokens.json", "special_tokens_map.json"):
        (model / name).write_text("{}\n")  # equal bytes: the reference's download crashes
    with pytest.raises(ModelRejected) as caught:
        upload_model(
            model, repo_id="miner/dup", competition=LOCAL_INSTRUCT, wallet=HOTKEY,
            chain=devnet, store=store, file_set="reference",
        )  # fmt: skip
    assert caught.value.reason == "duplicate_files"
    assert not any(store.root.iterdir())  # nothing pushed
    check_local_model(model, LOCAL_INSTRUCT)  # our own file set hashes both
