"""The batched engine gives the naive engine's answers, on several architectures."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from finetune.errors import EvalFailed
from finetune.eval.engine import BatchedEngine, is_out_of_memory
from finetune.eval.naive import NaiveEngine
from finetune.eval.requests import ChoiceRequest, GenerationRequest, LossRequest

LENGTHS = (3, 300, 17, 5, 120, 41, 250, 9, 64, 3)
STOP_IDS = (10, 11, 12, 13, 14)


def _load(path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


@pytest.fixture(scope="module")
def models(tiny_model_dirs) -> dict[str, torch.nn.Module]:
    return {arch: _load(path) for arch, path in tiny_model_dirs.items()}


def _sequences(vocab: int, seed: int = 0) -> list[tuple[int, ...]]:
    rng = random.Random(seed)
    # Ids from 3: the tiny tokenizer's special tokens are 0-2.
    return [tuple(rng.randrange(3, vocab) for _ in range(n)) for n in LENGTHS]


def _loss_requests(seqs) -> list[LossRequest]:
    # Mix reference-loss style (score the tail) and text-loss style (score from 1).
    return [
        LossRequest(s, score_from=1 if i % 2 else max(1, len(s) * 2 // 3))
        for i, s in enumerate(seqs)
    ]


def _generation_requests(seqs) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            s,
            max_new_tokens=20 if i % 3 else 7,
            repetition_penalty=(1.1, 1.2)[i % 2],
            stop_ids=STOP_IDS,
        )
        for i, s in enumerate(seqs)
    ]


def _assert_losses_match(got, want) -> None:
    assert [g.n_tokens for g in got] == [w.n_tokens for w in want]
    for g, w in zip(got, want, strict=True):
        assert g.sum_nll == pytest.approx(w.sum_nll, rel=1e-4)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3", "gpt_neox"])
def test_matches_naive_engine(models, arch):
    model = models[arch]
    seqs = _sequences(model.config.vocab_size)
    engine = BatchedEngine(model, batch_tokens=640)  # several batches, with padding
    naive = NaiveEngine(model)
    assert not engine._split.fallback

    losses = _loss_requests(seqs)
    _assert_losses_match(engine.loss(losses), naive.loss(losses))

    choices = [ChoiceRequest(s, choice_ids=(20, 21, 22, 23)) for s in seqs]
    for g, w in zip(engine.choice_logprobs(choices), naive.choice_logprobs(choices), strict=True):
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
        assert g.best == w.best

    gens = _generation_requests(seqs)
    got = engine.generate(gens)
    assert got == naive.generate(gens)
    # Some rows run to their limit, so finished rows leave the batch while others continue.
    assert {len(g.token_ids) for g in got} >= {7, 20}


def test_results_follow_input_order_and_progress_counts(models):
    model = models["llama"]
    seqs = _sequences(model.config.vocab_size, seed=3)
    requests = _loss_requests(seqs)
    done: list[int] = []
    engine = BatchedEngine(model, batch_tokens=500, max_rows=3)
    forward = engine.loss(requests, progress=done.append)
    backward = engine.loss(requests[::-1])
    assert [r.sum_nll for r in backward] == pytest.approx([r.sum_nll for r in forward[::-1]])
    assert sum(done) == len(requests) and len(done) > 3
    assert engine.loss([]) == [] and engine.generate([]) == []


def test_out_of_memory_backs_off_and_keeps_results(models, monkeypatch):
    model = models["qwen2"]
    seqs = _sequences(model.config.vocab_size, seed=5)
    naive = NaiveEngine(model)
    want_loss = naive.loss(_loss_requests(seqs))
    want_gen = naive.generate(_generation_requests(seqs))

    decoder = model.base_model
    real_forward = decoder.forward
    calls = {"oom": 0}

    def forward(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 1:
            calls["oom"] += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", forward)
    engine = BatchedEngine(model, batch_tokens=4096)
    done: list[int] = []
    _assert_losses_match(engine.loss(_loss_requests(seqs), progress=done.append), want_loss)
    assert calls["oom"] > 0 and sum(done) == len(seqs)
    # The batches stay as planned; the slice they run in is remembered, so generation goes
    # straight to one row at a time.
    assert engine.batch_tokens == 4096 and engine.slice_tokens < 300
    calls["oom"] = 0
    assert engine.generate(_generation_requests(seqs)) == want_gen
    assert calls["oom"] == 0


def test_out_of_memory_on_one_row_fails_the_eval(models, monkeypatch):
    model = models["llama"]

    def forward(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: out of memory")

    monkeypatch.setattr(model.base_model, "forward", forward)
    engine = BatchedEngine(model)
    engine._split._checked = True  # skip the head probe, which would hit the patched forward
    with pytest.raises(EvalFailed) as info:
        engine.choice_logprobs([ChoiceRequest((5, 6, 7), choice_ids=(1,))])
    assert info.value.reason == "out_of_memory"


def test_other_errors_propagate(models, monkeypatch):
    model = models["llama"]

    def forward(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(model.base_model, "forward", forward)
    engine = BatchedEngine(model)
    engine._split._checked = True
    with pytest.raises(RuntimeError, match="shape mismatch"):
        engine.loss([LossRequest((5, 6, 7), score_from=1)])


def test_is_out_of_memory():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("index out of range"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_head_mismatch_falls_back_to_full_logits(tiny_model_dir):
    model = _load(tiny_model_dir)
    # A soft-cap the Llama forward ignores: the split head would disagree with the model.
    model.config.final_logit_softcapping = 0.5
    engine = BatchedEngine(model, batch_tokens=400)
    naive = NaiveEngine(model)
    seqs = _sequences(model.config.vocab_size, seed=7)[:6]
    _assert_losses_match(engine.loss(_loss_requests(seqs)), naive.loss(_loss_requests(seqs)))
    assert engine._split.fallback
    gens = _generation_requests(seqs)
    assert engine.generate(gens) == naive.generate(gens)


def test_generation_ignores_the_models_generation_config(tiny_model_dir):
    model = _load(tiny_model_dir)
    model.generation_config.do_sample = True
    model.generation_config.temperature = 5.0
    model.generation_config.repetition_penalty = 3.0
    seqs = _sequences(model.config.vocab_size, seed=9)[:4]
    gens = [GenerationRequest(s, max_new_tokens=10) for s in seqs]
    first = BatchedEngine(model).generate(gens)
    assert first == BatchedEngine(model, batch_tokens=50).generate(gens)
    assert first == NaiveEngine(model).generate(gens)


def _prefixed(vocab: int, seed: int) -> tuple[list[tuple[int, ...]], int]:
    """Rows opening with a 40-token prefix: some share all of it, some only its first 20."""
    rng = random.Random(seed)
    prefix = tuple(rng.randrange(3, vocab) for _ in range(40))
    other = prefix[:20] + tuple(rng.randrange(3, vocab) for _ in range(20))
    seqs = []
    for i, n in enumerate((30, 5, 60, 12, 2, 44, 8, 25)):
        head = other if i % 4 == 3 else prefix
        seqs.append(head + tuple(rng.randrange(3, vocab) for _ in range(n)))
    return seqs, len(prefix)


class _Spy:
    """Counts the batches that went through the shared-prefix path, and their prefix lengths."""

    def __init__(self, engine: BatchedEngine, monkeypatch) -> None:
        self.lengths: list[int] = []
        for name in ("right_padded", "left_padded"):
            real = getattr(engine._prefix, name)

            def wrapped(seqs, prefix, *layout, _real=real):
                self.lengths.append(prefix)
                return _real(seqs, prefix, *layout)

            monkeypatch.setattr(engine._prefix, name, wrapped)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3", "gpt_neox"])
def test_shared_prefixes_give_the_naive_answers(models, arch, monkeypatch):
    model = models[arch]
    vocab = model.config.vocab_size
    seqs, prefix = _prefixed(vocab, seed=11)
    unshared = _sequences(vocab, seed=12)[:4]
    engine = BatchedEngine(model, batch_tokens=2000)
    naive = NaiveEngine(model)
    engine._prefix._check()  # the one-off probe, out of the spy's count
    spy = _Spy(engine, monkeypatch)

    # Partly shared: the batch shares the 20 tokens all its rows open with.
    losses = [LossRequest(s, score_from=prefix + 1) for s in seqs]
    _assert_losses_match(engine.loss(losses), naive.loss(losses))
    assert engine._prefix.enabled and spy.lengths == [20]
    # Fully shared, then scoring that starts inside the common prefix (cut before it).
    for score_from, shared in ((prefix + 1, prefix), (30, 29)):
        spy.lengths.clear()
        losses = [
            LossRequest(s, score_from=score_from) for s in seqs if s[:prefix] == seqs[0][:prefix]
        ]
        _assert_losses_match(engine.loss(losses), naive.loss(losses))
        assert spy.lengths == [shared]
    # Not shared: text-loss style (score_from=1) and rows opening differently.
    spy.lengths.clear()
    losses = [LossRequest(s, score_from=1) for s in seqs + unshared]
    losses += [LossRequest(s, score_from=len(s) // 2) for s in unshared]
    _assert_losses_match(engine.loss(losses), naive.loss(losses))
    assert spy.lengths == []

    spy.lengths.clear()
    choices = [ChoiceRequest(s, choice_ids=(20, 21, 22, 23)) for s in seqs + unshared]
    for g, w in zip(engine.choice_logprobs(choices), naive.choice_logprobs(choices), strict=True):
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
        assert g.best == w.best
    assert spy.lengths

    spy.lengths.clear()
    gens = _generation_requests(seqs + unshared)
    assert engine.generate(gens) == naive.generate(gens)
    assert spy.lengths


def test_prefix_sharing_turns_itself_off_when_the_cache_cannot_be_shared(models, monkeypatch):
    from transformers import DynamicCache

    model = models["llama"]
    # A cache that ignores the repeat: the probe's two-row suffix then fails to attend to it.
    monkeypatch.setattr(DynamicCache, "batch_repeat_interleave", lambda self, repeats: None)
    seqs, prefix = _prefixed(model.config.vocab_size, seed=13)
    engine = BatchedEngine(model, batch_tokens=2000)
    losses = [LossRequest(s, score_from=prefix + 1) for s in seqs]
    _assert_losses_match(engine.loss(losses), NaiveEngine(model).loss(losses))
    assert not engine._prefix.enabled
    off = BatchedEngine(model, share_prefixes=False)
    _assert_losses_match(off.loss(losses), NaiveEngine(model).loss(losses))


@pytest.mark.parametrize("pad", [10**6, -5])
def test_out_of_vocab_pad_id_from_the_config_is_not_used(tiny_model_dir, pad):
    # config.json is miner data: a pad id outside the embedding would make every padded
    # batch raise (and trigger a device-side assert on CUDA), though the model is fine.
    model = _load(tiny_model_dir)
    model.config.pad_token_id = pad
    seqs = _sequences(model.config.vocab_size, seed=17)[:6]
    engine = BatchedEngine(model, batch_tokens=640)
    naive = NaiveEngine(model)
    _assert_losses_match(engine.loss(_loss_requests(seqs)), naive.loss(_loss_requests(seqs)))
    gens = _generation_requests(seqs)
    assert engine.generate(gens) == naive.generate(gens)


def test_prefix_probe_interrupted_by_out_of_memory_is_run_again(models, monkeypatch):
    from transformers import DynamicCache

    model = models["llama"]
    engine = BatchedEngine(model, batch_tokens=2000)
    real = engine._prefix.right_padded

    def oom(seqs, prefix):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(engine._prefix, "right_padded", oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        engine._prefix._check()
    monkeypatch.setattr(engine._prefix, "right_padded", real)
    # The probe never finished: sharing must not be trusted unchecked. A broken cache is
    # then caught by the probe that runs on the next batch.
    monkeypatch.setattr(DynamicCache, "batch_repeat_interleave", lambda self, repeats: None)
    seqs, prefix = _prefixed(model.config.vocab_size, seed=13)
    losses = [LossRequest(s, score_from=prefix + 1) for s in seqs]
    _assert_losses_match(engine.loss(losses), NaiveEngine(model).loss(losses))
    assert not engine._prefix.enabled


def test_split_probe_interrupted_by_out_of_memory_is_run_again(tiny_model_dir, monkeypatch):
    model = _load(tiny_model_dir)
    model.config.final_logit_softcapping = 0.5  # the split head now disagrees with the model
    engine = BatchedEngine(model)
    real = model.forward
    calls = {"n": 0}

    def forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        engine._split._check()
    seqs = _sequences(model.config.vocab_size, seed=7)[:3]
    requests = _loss_requests(seqs)
    _assert_losses_match(engine.loss(requests), NaiveEngine(model).loss(requests))
    assert engine._split.fallback


def test_suppressed_tokens_are_never_generated(models):
    model = models["llama"]
    seqs = _sequences(model.config.vocab_size, seed=7)
    naive = NaiveEngine(model)
    free = naive.generate([GenerationRequest(s, max_new_tokens=12) for s in seqs])
    # Ban what each row produced first: every row has to take another path.
    banned = [GenerationRequest(s, max_new_tokens=12, suppress_ids=(f.token_ids[0], 10**6))
              for s, f in zip(seqs, free, strict=True)]
    got = naive.generate(banned)
    for request, result in zip(banned, got, strict=True):
        assert request.suppress_ids[0] not in result.token_ids
        assert len(result.token_ids) == 12
    assert BatchedEngine(model, batch_tokens=640).generate(banned) == got


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_losses_in_the_models_dtype_match_between_engines(models, arch):
    # The reference's arithmetic: cross-entropy on the logits as the model returns them.
    model = copy.deepcopy(models[arch]).to(torch.bfloat16)
    requests = _loss_requests(_sequences(model.config.vocab_size, seed=9))
    naive = NaiveEngine(model, loss_in_model_dtype=True).loss(requests)
    batched = BatchedEngine(model, batch_tokens=640, loss_in_model_dtype=True).loss(requests)
    for n, b, r in zip(naive, batched, requests, strict=True):
        assert n.n_tokens == b.n_tokens == len(r.token_ids) - r.score_from
        assert float(torch.tensor(n.mean).bfloat16()) == n.mean  # a bf16 value
        assert b.mean == n.mean  # the same kernels on the same logits, padded or not
    upcast = NaiveEngine(model).loss(requests)
    assert [u.mean for u in upcast] == pytest.approx([n.mean for n in naive], rel=0.02)


# ---- batch composition, out-of-memory back-off and the buffered head -------------------------


def test_out_of_memory_back_off_changes_no_answer(models, monkeypatch):
    # The batches are planned from the requests and the budget alone; a back-off runs each
    # planned batch in slices laid out as the whole batch, so every answer is the same.
    model = models["llama"]
    seqs, prefix = _prefixed(model.config.vocab_size, seed=21)
    seqs += _sequences(model.config.vocab_size, seed=22)
    losses = [LossRequest(s, score_from=prefix + 1 if len(s) > prefix + 1 else 1) for s in seqs]
    choices = [ChoiceRequest(s, choice_ids=(20, 21, 22)) for s in seqs]
    calm = BatchedEngine(model, batch_tokens=4096)
    want = (calm.loss(losses), calm.choice_logprobs(choices))
    plan = calm.plan([len(r.token_ids) - 1 for r in losses], [r.token_ids for r in losses])

    decoder = model.base_model
    real_forward = decoder.forward

    def forward(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 2:  # only slices of at most two rows fit
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", forward)
    tight = BatchedEngine(model, batch_tokens=4096)
    got = (tight.loss(losses), tight.choice_logprobs(choices))
    assert tight.slice_tokens is not None  # it did back off
    assert tight.plan([len(r.token_ids) - 1 for r in losses], [r.token_ids for r in losses]) == plan
    assert got == want  # exactly: the same planned batches, the same layouts


def test_padding_rule_cuts_long_batches_only():
    from finetune.eval.batching import EFFICIENT_TOKENS, longest_first, next_batch

    long = [3000, 2950, 2000, 1990]
    order = longest_first(long)
    # 3000 + 2950 pads little; 2000 would pad a third of a three-row batch.
    assert next_batch(order, long, 0, batch_tokens=12_000, max_padding=0.1).indices == (0, 1)
    assert next_batch(order, long, 0, batch_tokens=12_000).indices == (0, 1, 2, 3)  # rule off
    # Short rows are batched whatever their padding, until they fill `EFFICIENT_TOKENS`.
    short = [100] + [40] * 60
    batch = next_batch(longest_first(short), short, 0, batch_tokens=10**6, max_padding=0.1)
    assert 100 + 40 * (batch.rows - 1) >= EFFICIENT_TOKENS > 100 + 40 * (batch.rows - 2)


def test_engine_plans_with_the_padding_rule_except_for_generation(models):
    engine = BatchedEngine(models["llama"], batch_tokens=12_000, share_prefixes=False)
    lengths = [3000, 2950, 2000, 1990]
    keys = [(i,) * n for i, n in enumerate(lengths)]
    assert [b.indices for b in engine.plan(lengths, keys)] == [(0, 1), (2, 3)]
    assert [b.indices for b in engine.plan(lengths, keys, padding_rule=False)] == [(0, 1, 2, 3)]


@pytest.mark.parametrize("post", [None, "softcap", "scale"])
def test_buffered_head_gives_the_heads_values(tiny_model_dir, post):
    from finetune.eval._forward import SplitModel

    model = _load(tiny_model_dir)
    split = SplitModel(model, torch.device("cpu"))
    split._checked = True
    if post == "softcap":
        split._softcap = 0.7
    elif post == "scale":
        split._scale = 0.25
    hidden = torch.randn(37, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    assert split.head_buffers(16) is None  # autograd on: out= kernels would refuse
    with torch.inference_mode():
        _check_buffered_head(split, hidden, model.config.vocab_size)


def _check_buffered_head(split, hidden, vocab):
    from finetune.eval._forward import chunked_nll

    buffers = split.head_buffers(16)
    assert buffers is not None
    assert torch.equal(split.head_into(hidden[:16], buffers), split.head(hidden[:16]))
    assert torch.equal(split.head_into(hidden[16:25], buffers), split.head(hidden[16:25]))
    targets = torch.randint(0, vocab, (37,), generator=torch.Generator().manual_seed(1))
    rows = torch.tensor([0] * 20 + [1] * 17)
    got = chunked_nll(split, hidden, targets, rows, 2, chunk=16)
    nll = torch.nn.functional.cross_entropy(split.head(hidden), targets, reduction="none").double()
    assert torch.allclose(got, torch.stack([nll[:20].sum(), nll[20:].sum()]), rtol=1e-12)
