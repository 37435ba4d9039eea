"""Inputs that look valid and used to give silently wrong answers: right padding, no attention
mask (lm-eval's HFLM), models left in train mode, negative layers, degenerate pairs."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune.extract import extract_vectors, read_activations
from reptune.pairs import ContrastivePair
from reptune.steering import SteeredModel
from reptune.tokenization import encode_batch
from reptune.vectors import SteeringVectors

PROMPTS = [
    "the quick brown fox jumps",
    "I love",
    "Question: is it true?",
    "yes",
    "a wonderful happy day",
    "no never",
    "the lazy dog",
    "Answer: (A",
]
PAIRS = [
    ContrastivePair("I love this happy day", "I hate this sad day"),
    ContrastivePair("a wonderful fox", "a terrible fox"),
    ContrastivePair("yes, gladly", "no, never"),
]


def _vectors(hidden=32, layers=(1, 2)):
    g = torch.Generator().manual_seed(0)
    return SteeringVectors({layer: torch.randn(hidden, generator=g) for layer in layers})


@pytest.mark.parametrize("positions", [-1, [-3, -1], "prompt", "all"])
def test_right_padded_offsets_count_from_each_rows_own_end(positions):
    """A right-padded batch (real tokens first) steers every row as it is steered alone."""
    model, tok = make_model(), make_tokenizer()
    coefs = torch.linspace(-4, 6, len(PROMPTS))
    steered = SteeredModel(model, _vectors(), positions=positions, coefficient_unit="raw")
    batch = encode_batch(tok, PROMPTS, padding_side="right", position_ids=True)
    with torch.no_grad():
        logits = steered(**batch, coefficient=coefs).logits
        plain = model(**batch).logits
        for row, prompt in enumerate(PROMPTS):
            n = int(batch["attention_mask"][row].sum())
            alone = steered(**encode_batch(tok, [prompt]), coefficient=float(coefs[row])).logits
            assert (logits[row, :n] - alone[0]).abs().max() <= 1e-5, (row, prompt)
            # the row's own last token was steered (before, short rows were left untouched)
            assert (logits[row, n - 1] - plain[row, n - 1]).abs().max() > 1e-3, (row, prompt)


def _hflm_batch(tok, prompts):
    """As lm-eval's HFLM builds a loglikelihood batch: right-padded with zeros, no mask."""
    ids = [tok(p)["input_ids"] for p in prompts]
    width = max(map(len, ids))
    return torch.tensor([seq + [0] * (width - len(seq)) for seq in ids]), [len(s) for s in ids]


def test_hflm_right_padding_without_mask_batch_of_1_equals_batch_of_8():
    """HFLM calls the model without an attention mask: 'all' is exact, offsets are refused."""
    model, tok = make_model(), make_tokenizer()
    vecs = _vectors()
    with torch.no_grad(), SteeredModel(model, vecs, coefficient=5.0, coefficient_unit="raw"):
        ids, lengths = _hflm_batch(tok, PROMPTS)
        batched = model(ids).logits
        for row, n in enumerate(lengths):
            one, _ = _hflm_batch(tok, [PROMPTS[row]])
            alone = model(one).logits[0]
            assert (batched[row, :n] - alone).abs().max() <= 1e-5
    blocks = []
    handles = [b.register_forward_pre_hook(lambda *a: blocks.append(1)) for b in model.model.layers]
    offsets = SteeredModel(model, vecs, coefficient=5.0, coefficient_unit="raw", positions=[-1])
    with torch.no_grad(), offsets:
        single, _ = _hflm_batch(tok, PROMPTS[:1])
        model(single)  # one row has no padding: fine
        blocks.clear()
        with pytest.raises(ValueError, match="passes no attention_mask"):
            model(ids)
    assert not blocks, "the refusal came after a decoder block ran"
    for handle in handles:
        handle.remove()


def _dropout_gpt2():
    model = make_model("gpt2")
    assert model.config.resid_pdrop > 0 and model.config.attn_pdrop > 0
    return model


def test_extraction_in_train_mode_runs_in_eval_mode_and_restores_it():
    model, tok = _dropout_gpt2(), make_tokenizer()
    reference = extract_vectors(model, tok, PAIRS, layers=[1, 2], progress=False)
    model.train()
    model.transformer.h[0].eval()  # a mixed state must come back exactly
    modes = {name: m.training for name, m in model.named_modules()}
    first = extract_vectors(model, tok, PAIRS, layers=[1, 2], progress=False)
    second = extract_vectors(model, tok, PAIRS, layers=[1, 2], progress=False)
    for layer in (1, 2):
        assert torch.equal(first[layer], second[layer])
        torch.testing.assert_close(first[layer], reference[layer], rtol=0, atol=1e-6)
    assert {name: m.training for name, m in model.named_modules()} == modes
    with pytest.raises(ValueError):  # restored on error too
        read_activations(model, tok, ["a"], [1], position=-5)
    assert {name: m.training for name, m in model.named_modules()} == modes


def test_steering_in_train_mode_is_deterministic_and_restores_the_mode():
    model, tok = _dropout_gpt2(), make_tokenizer()
    batch = encode_batch(tok, PROMPTS[:3], position_ids=True)
    steered = SteeredModel(model, _vectors(), coefficient=3.0, coefficient_unit="raw")
    with torch.no_grad():
        expected = steered(**batch).logits
        model.train()
        assert torch.equal(steered(**batch).logits, expected)
        assert torch.equal(steered(**batch).logits, expected)
        out = steered.generate(**batch, max_new_tokens=3, do_sample=False)
        assert torch.equal(out, steered.generate(**batch, max_new_tokens=3, do_sample=False))
        assert model.training and all(m.training for m in model.modules())
        with steered:
            assert not model.training
            assert torch.equal(model(**batch).logits, expected)
        assert model.training
        with pytest.raises(RuntimeError), steered:
            raise RuntimeError("inside")
        assert model.training and all(m.training for m in model.modules())


def test_negative_layers_count_from_the_end_in_steered_model():
    model, tok = make_model(n_layers=4), make_tokenizer()
    vecs = _vectors(layers=(2, 3))
    batch = encode_batch(tok, PROMPTS[:3], position_ids=True)
    with torch.no_grad():
        positive = SteeredModel(model, vecs, layers=[3], coefficient=4.0, coefficient_unit="raw")
        negative = SteeredModel(model, vecs, layers=[-1], coefficient=4.0, coefficient_unit="raw")
        from_dict = SteeredModel(model, {-1: vecs[3]}, coefficient=4.0, coefficient_unit="raw")
        expected = positive(**batch).logits
        assert negative.layers == [3] and from_dict.layers == [3]
        assert torch.equal(negative(**batch).logits, expected)
        assert torch.equal(from_dict(**batch).logits, expected)
        assert not torch.equal(model(**batch).logits, expected)


def _passthrough_model():
    """A Llama whose blocks leave the residual stream unchanged (block outputs = embeddings)."""
    model = make_model("llama", n_layers=3)
    with torch.no_grad():
        for block in model.model.layers:
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
    return model


@pytest.mark.parametrize("method", ["mean_diff", "pca_diff", "pca_center"])
def test_pairs_that_do_not_differ_at_a_layer_are_refused_by_every_method(method):
    """Different tokens with equal embeddings: every layer sees the same activations."""
    model, tok = _passthrough_model(), make_tokenizer()
    pairs = [ContrastivePair(f"k{p}", f"k{n}") for p, n in zip("ABC", "abc")]
    last = lambda text: tok(text)["input_ids"][-1]  # noqa: E731
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        for pair in pairs:
            emb[last(pair.negative)] = emb[last(pair.positive)]
    with pytest.raises(ValueError, match="layer 0: the positive and negative texts give the same"):
        extract_vectors(model, tok, pairs, layers=[0], method=method, progress=False)


def test_pca_of_identical_differences_is_refused_and_mean_diff_is_not():
    model, tok = _passthrough_model(), make_tokenizer()
    pairs = [ContrastivePair("kA", "ka")] * 3
    with pytest.raises(ValueError, match="every pair has the same difference"):
        extract_vectors(model, tok, pairs, layers=[0], method="pca_diff", progress=False)
    vecs = extract_vectors(model, tok, pairs, layers=[0], method="mean_diff", progress=False)
    assert vecs.metadata["diagnostics"][0]["accuracy"] == 1.0
