import json

from safetensors import safe_open


def test_tiny_model_is_safetensors_with_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    files = {p.name for p in tiny_model_dir.iterdir()}
    assert "model.safetensors" in files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>assistant\n")
    assert json.loads((tiny_model_dir / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]


def test_same_seed_same_weights(tmp_path, tiny_model_dir):
    from finetune.tiny_model import build_tiny_model

    again = build_tiny_model(tmp_path / "again", seed=0, arch="llama")
    other = build_tiny_model(tmp_path / "other", seed=5, arch="llama")
    with safe_open(tiny_model_dir / "model.safetensors", "pt") as a, safe_open(
        again / "model.safetensors", "pt"
    ) as b, safe_open(other / "model.safetensors", "pt") as c:
        name = "model.layers.0.mlp.up_proj.weight"
        assert (a.get_tensor(name) == b.get_tensor(name)).all()
        assert not (a.get_tensor(name) == c.get_tensor(name)).all()
