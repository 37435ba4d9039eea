import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune.extract import extract_vectors
from reptune.pairs import ContrastivePair
from reptune.tokenization import encode_batch

TEXTS = [
    ("I love this happy day", "I hate this sad day"),
    ("a wonderful fox", "a terrible fox"),
    ("yes, gladly", "no, never"),
    ("the honest answer is (A", "the deceptive answer is (B"),
    ("quick", "lazy"),
]
PAIRS = [ContrastivePair(p, n) for p, n in TEXTS]


def _passthrough_model(n_layers=3):
    """A Llama whose blocks leave the residual stream unchanged: block outputs = embeddings."""
    model = make_model("llama", n_layers=n_layers)
    with torch.no_grad():
        for block in model.model.layers:
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
    return model


@pytest.mark.parametrize("method", ["mean_diff", "pca_diff", "pca_center"])
def test_planted_direction_is_recovered(method):
    model, tok = _passthrough_model(), make_tokenizer()
    pos_chars, neg_chars = "ABCDEFGHIJKL", "abcdefghijkl"
    pairs = [ContrastivePair(f"k{p}", f"k{n}") for p, n in zip(pos_chars, neg_chars)]
    last = lambda text: tok(text)["input_ids"][-1]  # noqa: E731
    ids = [last(p.positive) for p in pairs] + [last(p.negative) for p in pairs]
    assert len(set(ids)) == len(ids)
    torch.manual_seed(1)
    direction = torch.randn(32)
    direction /= direction.norm()
    emb = model.model.embed_tokens.weight
    with torch.no_grad():
        for i, pair in enumerate(pairs):
            strength = 2.0 + 0.5 * i  # varying strength gives PCA of differences something to find
            emb[last(pair.positive)] = emb[last(pair.negative)] + strength * direction
            emb[last(pair.positive)] += 0.01 * torch.randn(32)
    vecs = extract_vectors(
        model, tok, pairs, layers=[0, 2], method=method, position=-1, batch_size=5, progress=False
    )
    for layer in (0, 2):
        assert torch.nn.functional.cosine_similarity(vecs[layer], direction, 0) >= 0.99
        assert vecs.metadata["diagnostics"][layer]["accuracy"] == 1.0


def _reference_mean_diff(model, tok, pairs, layer):
    """Plain reference: one text at a time, full forward with output_hidden_states."""
    diffs = []
    with torch.no_grad():
        for pair in pairs:
            acts = []
            for text in (pair.positive, pair.negative):
                out = model(**tok(text, return_tensors="pt"), output_hidden_states=True)
                acts.append(out.hidden_states[layer + 1][0, -1])
            diffs.append(acts[0] - acts[1])
    return torch.stack(diffs).mean(0)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_extraction_matches_plain_reference(arch):
    model, tok = make_model(arch, n_layers=4), make_tokenizer()
    # Not the last block: transformers applies the final norm to hidden_states[-1].
    vecs = extract_vectors(
        model, tok, PAIRS, layers=[0, 2], normalize=False, batch_size=2, progress=False
    )
    for layer in (0, 2):
        ref = _reference_mean_diff(model, tok, PAIRS, layer)
        if (ref @ vecs[layer]) < 0:  # the sign vote may flip a direction the data disagrees on
            ref = -ref
        torch.testing.assert_close(vecs[layer], ref, atol=1e-5, rtol=1e-5)


def test_metadata_and_diagnostics():
    model, tok = make_model(), make_tokenizer()
    vecs = extract_vectors(model, tok, PAIRS, layers=[1], method="pca_diff", progress=False)
    meta = vecs.metadata
    assert meta["hidden_size"] == 32 and meta["num_layers"] == 4
    assert meta["method"] == "pca_diff" and meta["num_pairs"] == len(PAIRS)
    assert len(meta["data_fingerprint"]) == 16
    diag = meta["diagnostics"][1]
    assert 0.5 <= diag["accuracy"] <= 1.0 and 0 <= diag["explained_variance"] <= 1
    assert torch.isclose(vecs[1].norm(), torch.tensor(1.0))


def test_reservoir_bounds_memory_and_keeps_mean_exact():
    model, tok = make_model(), make_tokenizer()
    full = extract_vectors(model, tok, PAIRS, layers=[2], progress=False, normalize=False)
    capped = extract_vectors(
        model, tok, PAIRS, layers=[2], progress=False, normalize=False, max_pairs_in_memory=2
    )
    torch.testing.assert_close(full[2], capped[2])
    assert capped.metadata["diagnostics"][2]["pairs_used"] == 2


def test_bad_inputs():
    model, tok = make_model(), make_tokenizer()
    with pytest.raises(ValueError, match="no contrastive pairs"):
        extract_vectors(model, tok, [], layers=[1])
    with pytest.raises(ValueError, match="identical"):
        extract_vectors(model, tok, [ContrastivePair("same", "same")], layers=[1])
    with pytest.raises(ValueError, match="empty"):
        extract_vectors(model, tok, [ContrastivePair("text", "")], layers=[1])
    with pytest.raises(ValueError, match="out of range"):
        extract_vectors(model, tok, PAIRS, layers=[7])
    with pytest.raises(ValueError, match="unknown method"):
        extract_vectors(model, tok, PAIRS, layers=[1], method="median")
    with pytest.raises(ValueError, match="context"):
        extract_vectors(model, tok, [ContrastivePair("word " * 200, "other")], layers=[1])
    with pytest.raises(ValueError, match="falls before the first token"):
        extract_vectors(model, tok, PAIRS, layers=[1], position=[-500], progress=False)


def test_tokenizer_without_pad_token_pads_with_eos_and_is_left_unchanged():
    tok = make_tokenizer()
    assert tok.pad_token is None
    batch = encode_batch(tok, ["a", "a b c"])
    assert tok.pad_token is None  # the caller's tokenizer is not modified
    assert batch["attention_mask"][0].tolist()[0] == 0  # left padded
    assert batch["input_ids"][0, 0] == tok.eos_token_id


def test_diagnostic_plots_and_cli(tmp_path):
    from reptune.analysis.diagnostics import plot_layer_accuracy, plot_pca_scatter

    model, tok = make_model(), make_tokenizer()
    vecs = extract_vectors(model, tok, PAIRS, layers=[0, 1, 2], progress=False)
    acc = plot_layer_accuracy(vecs, tmp_path / "acc.png")
    pca = plot_pca_scatter(model, tok, PAIRS, 1, -1, tmp_path / "pca.png")
    for path in (acc, pca):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_missing_pairs_file_fails_before_loading_a_model(tmp_path, monkeypatch, capsys):
    import reptune.models
    from reptune.cli import main

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(reptune.models, "load_model", no_load)
    code = main(["extract", "--pairs", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path)])
    assert code == 2
    assert "nope.jsonl does not exist" in capsys.readouterr().err


def test_residual_norms_are_the_median_over_real_tokens():
    """Extraction records each layer's median token norm, as a one-text-at-a-time reference."""
    from reptune.extract import measure_residual_norms

    model, tok = make_model("llama", n_layers=4), make_tokenizer(pad=True)
    vecs = extract_vectors(model, tok, PAIRS, layers=[0, 2], batch_size=2, progress=False)
    texts = [t for pair in PAIRS for t in (pair.positive, pair.negative)]
    for layer in (0, 2):
        norms = []
        with torch.no_grad():
            for text in texts:
                out = model(**tok(text, return_tensors="pt"), output_hidden_states=True)
                # layer i = output of block i = hidden_states[i + 1] (the last one is normed)
                hidden = out.hidden_states[layer + 1][0]
                norms.append(hidden.norm(dim=-1))
        expected = float(torch.cat(norms).median())
        assert vecs.residual_norms[layer] == pytest.approx(expected, rel=1e-5)
    measured = measure_residual_norms(model, tok, texts, [0], batch_size=3)
    assert measured[0] == pytest.approx(vecs.residual_norms[0], rel=1e-5)
