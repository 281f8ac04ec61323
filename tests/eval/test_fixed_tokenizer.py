"""The fixed `Xenova/gpt-4` tokenizer: built offline byte for byte, fetched once, loaded exactly."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from finetune.errors import ConfigError
from finetune.eval import fixed_tokenizer
from finetune.eval.fixed_tokenizer import (
    FIXED_TOKENIZER_DIR_ENV,
    fixed_tokenizer_folder,
    load_fixed_tokenizer,
)
from finetune.eval.gpt4_tokenizer import (
    GPT4_REPO_ID,
    GPT4_TOKENIZER_JSON_SHA256,
    byte_symbols,
    last_merge,
)
from finetune.eval.loading import load_model, load_tokenizer


def test_built_tokenizer_json_is_the_hubs(gpt4_tokenizer_dir):
    digest = hashlib.sha256((gpt4_tokenizer_dir / "tokenizer.json").read_bytes()).hexdigest()
    assert digest == GPT4_TOKENIZER_JSON_SHA256
    assert len((gpt4_tokenizer_dir / "tokenizer_config.json").read_bytes()) == 460  # the Hub's


def test_byte_symbols_and_merges():
    symbols = byte_symbols()
    assert len(set(symbols)) == 256 and symbols[ord("a")] == "a" and symbols[ord(" ")] == "Ġ"
    ranks = {b"a": 0, b"b": 1, b"c": 2, b"ab": 3, b"bc": 4, b"abc": 5}
    assert last_merge(b"abc", ranks) == (b"ab", b"c")  # "ab" (3) merges before "bc" (4)


def test_loaded_as_the_reference_loads_it(gpt4_tokenizer_dir):
    tok = load_fixed_tokenizer(gpt4_tokenizer_dir)
    assert (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id) == (100257, 100257, None)
    assert tok.encode("hello world") == [15339, 1917]
    # The Split pre-tokenizer of the file is kept: digits go in threes (GPT-2's would not).
    assert [tok.decode([i]) for i in tok.encode("1000000")] == ["100", "000", "0"]
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_offline_without_the_files_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.delenv(FIXED_TOKENIZER_DIR_ENV, raising=False)
    with pytest.raises(ConfigError, match=FIXED_TOKENIZER_DIR_ENV):
        load_fixed_tokenizer(GPT4_REPO_ID, tokenizer_dir=tmp_path)
    with pytest.raises(ConfigError, match="tokenizer_dir"):
        load_tokenizer(GPT4_REPO_ID)  # known id: the fixed loader, HF cache empty and offline


def test_a_folder_holding_the_files_is_found_by_setting_or_env(gpt4_tokenizer_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    shutil.copytree(gpt4_tokenizer_dir, cache / "Xenova--gpt-4")
    assert fixed_tokenizer_folder(GPT4_REPO_ID, tokenizer_dir=cache) == cache / "Xenova--gpt-4"
    monkeypatch.setenv(FIXED_TOKENIZER_DIR_ENV, str(gpt4_tokenizer_dir))  # the files themselves
    assert fixed_tokenizer_folder(GPT4_REPO_ID) == gpt4_tokenizer_dir
    assert load_tokenizer(GPT4_REPO_ID).eos_token_id == 100257


def test_a_validator_downloads_once_into_its_cache(gpt4_tokenizer_dir, tmp_path, monkeypatch):
    calls = []

    def fake_snapshot_download(repo_id, *, allow_patterns, local_dir=None, **kw):
        calls.append((repo_id, sorted(allow_patterns)))
        shutil.copytree(gpt4_tokenizer_dir, local_dir)
        return str(local_dir)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    for _ in range(2):
        tok = load_fixed_tokenizer(GPT4_REPO_ID, tokenizer_dir=tmp_path)
        assert tok.encode("hello world") == [15339, 1917]
    assert calls == [(GPT4_REPO_ID, sorted(fixed_tokenizer.TOKENIZER_FILES))]


def test_load_model_takes_the_fixed_tokenizer_from_tokenizer_dir(tiny_model_dir, gpt4_tokenizer_dir):
    _, tok = load_model(tiny_model_dir, tokenizer=GPT4_REPO_ID, tokenizer_dir=gpt4_tokenizer_dir)
    assert tok.eos_token_id == 100257 and tok.pad_token_id is None
    _, own = load_model(tiny_model_dir)
    assert own.eos_token_id != 100257


def test_a_different_file_warns(gpt4_tokenizer_dir, tmp_path, caplog):
    folder = tmp_path / "Xenova--gpt-4"
    shutil.copytree(gpt4_tokenizer_dir, folder)
    (folder / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes() + b"\n")
    load_fixed_tokenizer(GPT4_REPO_ID, tokenizer_dir=tmp_path)
    assert "not the one the reference validators load" in caplog.text
