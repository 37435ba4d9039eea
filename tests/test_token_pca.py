import pytest
import torch
from conftest import make_model, make_tokenizer
from PIL import Image

from reptune.analysis.token_pca import pair_components, plot_token_pca, token_pca
from reptune.extract import read_activations
from reptune.pairs import ContrastivePair

PAIRS = [
    ContrastivePair("I love this wonderful happy day", "I hate this terrible sad day"),
    ContrastivePair("the happy fox", "the sad fox"),
    ContrastivePair("You are an honest assistant", "You are a deceptive assistant"),
    ContrastivePair("yes, wonderful", "no, terrible"),
    ContrastivePair("A happy dog", "A sad dog"),
]


def test_planted_direction_is_the_first_component():
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    w = torch.randn(16, generator=g)
    w = torch.nn.functional.normalize(w - (w @ u) * u, dim=0)
    # The differences vary most along u (and are +u on average), less along w.
    along_u = 1 + 3 * torch.randn(40, 1, generator=g)
    diffs = along_u * u + torch.randn(40, 1, generator=g) * w
    diffs = diffs + 0.01 * torch.randn(40, 16, generator=g)
    comps, ratios = pair_components(diffs, n_components=2)
    assert float(comps[0] @ u) > 0.99  # found, and signed along the mean difference
    assert abs(float(comps[1] @ w)) > 0.99
    assert ratios[0] > ratios[1] > ratios[2]
    assert len(ratios) == 10 and sum(ratios) < 1 and sum(ratios[:2]) > 0.99


def test_matches_a_hand_computation():
    model, tok = make_model(), make_tokenizer()
    texts = ["I love this happy day", "the sad fox jumps"]
    view = token_pca(model, tok, PAIRS, layer=2, texts=texts, n_components=3, batch_size=2)
    pos = read_activations(model, tok, [p.positive for p in PAIRS], [2], -1)[2]
    neg = read_activations(model, tok, [p.negative for p in PAIRS], [2], -1)[2]
    diffs = (pos - neg).double()
    _, s, vh = torch.linalg.svd(diffs - diffs.mean(0), full_matrices=False)
    for k in range(3):
        assert abs(float(view.components[k].double() @ vh[k])) == pytest.approx(1.0, abs=1e-5)
        assert float(view.components[k].double() @ diffs.mean(0)) >= 0
    ratios = (s**2 / (s**2).sum()).tolist()
    assert view.explained_variance_ratio == pytest.approx(ratios, abs=1e-6)
    center = torch.cat([pos, neg]).mean(0)
    for i, text in enumerate(texts):
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        expected = (hs[3][0] - center) @ view.components.T
        torch.testing.assert_close(view.loadings[i], expected, atol=1e-4, rtol=1e-4)
        assert len(view.tokens[i]) == len(ids)
    rows = view.rows()
    assert len(rows) == sum(len(tok(t)["input_ids"]) for t in texts)
    assert rows[1]["pc2"] == pytest.approx(float(view.loadings[0][1, 1]))
    comp = view.component_rows()
    mean_unit = diffs.mean(0) / diffs.mean(0).norm()
    assert comp[0]["cosine_with_mean_difference"] == pytest.approx(
        float(view.components[0].double() @ mean_unit), abs=1e-5
    )


def test_top_tokens_and_plot(tmp_path):
    model, tok = make_model(), make_tokenizer()
    view = token_pca(model, tok, PAIRS, layer=1)
    assert len(view.texts) == 4  # the first two pairs' texts by default
    top = view.top_tokens(0, n=3)
    high = [r["pc1"] for r in top if r["side"] == "high"]
    low = [r["pc1"] for r in top if r["side"] == "low"]
    rows = view.rows()
    # Texts 0 and 1 are one pair: text 1 repeats text 0's tokens up to where they differ.
    shared = next(t for t, (a, b) in enumerate(zip(*view.tokens[:2])) if a != b)
    assert [r["repeat"] for r in rows if r["text"] == 1][: shared + 1] == [True] * shared + [False]
    assert not any(r["repeat"] for r in rows if r["text"] == 0)
    eligible = sorted(
        r["pc1"] for r in rows if r["position"] > 0 and not (r["special"] or r["repeat"])
    )
    assert high == eligible[::-1][:3] and low == eligible[:3]
    png = plot_token_pca(view, tmp_path / "pca.png")
    assert Image.open(png).size[0] > 100
    one = token_pca(model, tok, PAIRS, layer=1, n_components=1)
    assert Image.open(plot_token_pca(one, tmp_path / "pca1.png")).size[0] > 100


def test_bad_input():
    model, tok = make_model(), make_tokenizer()
    with pytest.raises(ValueError, match="at least 2 pairs"):
        token_pca(model, tok, PAIRS[:1], layer=1)
    with pytest.raises(ValueError, match="out of range"):
        token_pca(model, tok, PAIRS, layer=9)
    with pytest.raises(ValueError, match="n_components"):
        pair_components(torch.randn(3, 8), n_components=4)
    with pytest.raises(ValueError, match="do not vary"):
        pair_components(torch.ones(4, 8))
