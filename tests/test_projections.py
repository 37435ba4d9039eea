import pytest
import torch
from conftest import make_model, make_tokenizer
from PIL import Image

from reptune.analysis.projection_plots import plot_projections
from reptune.analysis.projections import ProjectionResult, record_projections
from reptune.layers import find_layers
from reptune.steering import SteeredModel
from reptune.vectors import SteeringVectors

PROMPTS = ["the quick brown fox", "I love this", "Question: is it true or false?"]
LAYERS = [0, 1, 2]


def _vectors(layers=(0, 1, 2, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    vecs = {layer: torch.randn(32, generator=g) for layer in layers}
    return SteeringVectors(vecs).with_residual_norms({layer: 2.0 for layer in layers})


def _manual(model, ids, vectors, layers):
    """Projections of one sequence from output_hidden_states (entry i + 1 = block i's output)."""
    with torch.no_grad():
        hs = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    rows = []
    for layer in layers:
        unit = vectors[layer] / vectors[layer].norm()
        rows.append(hs[layer + 1][0] @ unit)
    proj = torch.stack(rows)
    norms = torch.stack([hs[layer + 1][0].norm(dim=-1) for layer in layers])
    return proj, proj / norms


def _assert_matches_manual(model, res, vectors):
    for i in range(len(res)):
        proj, cos = _manual(model, res.token_ids[i], vectors, res.layers)
        assert res.projection[i].shape == proj.shape
        assert torch.isnan(res.projection[i][:, -1]).all()  # the last token is never read
        torch.testing.assert_close(res.projection[i][:, :-1], proj[:, :-1], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(res.cosine[i][:, :-1], cos[:, :-1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("use_cache", [True, False])
def test_matches_output_hidden_states(use_cache):
    model, tok, vecs = make_model(), make_tokenizer(), _vectors()
    res = record_projections(
        model, tok, PROMPTS, vecs, LAYERS, max_new_tokens=6, use_cache=use_cache
    )
    assert len(res) == 3 and res.layers == LAYERS
    for i, prompt in enumerate(PROMPTS):
        assert res.prompt_lengths[i] == len(tok(prompt)["input_ids"])
        assert len(res.token_ids[i]) == res.prompt_lengths[i] + 6
        assert len(res.tokens[i]) == len(res.token_ids[i])
    _assert_matches_manual(model, res, vecs)


def test_cache_and_batching_agree_and_eos_truncates():
    model, tok, vecs = make_model(), make_tokenizer(), _vectors()
    batched = record_projections(model, tok, PROMPTS, vecs, LAYERS, max_new_tokens=8)
    # A token generated mid-way in row 0 becomes the end-of-sequence token: row 0 must stop
    # there in the batch (other rows keep going) exactly as when it runs alone.
    eos = batched.token_ids[0][batched.prompt_lengths[0] + 3]
    kwargs = dict(max_new_tokens=8, eos_token_id=eos)
    together = record_projections(model, tok, PROMPTS, vecs, LAYERS, batch_size=3, **kwargs)
    alone = record_projections(model, tok, PROMPTS, vecs, LAYERS, batch_size=1, **kwargs)
    no_cache = record_projections(
        model, tok, PROMPTS, vecs, LAYERS, batch_size=2, use_cache=False, **kwargs
    )
    assert together.token_ids[0][-1] == eos
    assert len(together.token_ids[0]) <= together.prompt_lengths[0] + 4
    for other in (alone, no_cache):
        assert other.token_ids == together.token_ids
        assert other.prompt_lengths == together.prompt_lengths
        for a, b in zip(other.projection, together.projection):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, equal_nan=True)
    _assert_matches_manual(model, together, vecs)


@pytest.mark.parametrize(
    "positions,use_cache", [("all", True), ("generated", True), ("generated", False)]
)
def test_steered_records_the_stream_after_the_addition(positions, use_cache):
    model, tok, vecs = make_model(), make_tokenizer(), _vectors()
    steered = SteeredModel(model, vecs, layers=[1], coefficient=0.8, positions=positions)
    blocks = find_layers(model)
    hooks_before = [len(b._forward_hooks) for b in blocks]
    res = record_projections(
        steered, tok, PROMPTS[:2], vecs, LAYERS, max_new_tokens=5, use_cache=use_cache
    )
    assert [len(b._forward_hooks) for b in blocks] == hooks_before  # no hook outlives the call
    unit = vecs[1] / vecs[1].norm()
    seen = {}
    for i in range(len(res)):
        seen.clear()
        ids, n_prompt = torch.tensor([res.token_ids[i]]), res.prompt_lengths[i]
        # What block 2 reads is the stream after the steering addition at layer 1; a hook put
        # in front of the steering hook sees block 1's output before it.
        pre = blocks[2].register_forward_pre_hook(lambda m, a: seen.__setitem__("after", a[0]))
        before = blocks[1].register_forward_hook(
            lambda m, a, out: seen.__setitem__("before", out), prepend=True
        )
        try:
            with torch.no_grad(), steered.steering(prompt_length=n_prompt):
                model(input_ids=ids)
        finally:
            pre.remove()
            before.remove()
        after, raw = seen["after"][0] @ unit, seen["before"][0] @ unit
        recorded = res.projection[i][LAYERS.index(1), :-1]
        torch.testing.assert_close(recorded, after[:-1], atol=1e-4, rtol=1e-4)
        added = 0.8 * float(vecs.direction(1) @ unit)
        steered_cols = slice(0, None) if positions == "all" else slice(n_prompt, None)
        gap = (recorded - raw[:-1])[steered_cols]
        torch.testing.assert_close(gap, torch.full_like(gap, added), atol=1e-4, rtol=1e-4)
        if positions == "generated":
            torch.testing.assert_close(recorded[:n_prompt], raw[:n_prompt], atol=1e-5, rtol=0)
        assert abs(added) > 0.1


def test_per_prompt_coefficients_match_separate_runs():
    model, tok, vecs = make_model(), make_tokenizer(), _vectors()
    coef = torch.tensor([0.5, -0.5])
    res = record_projections(
        SteeredModel(model, vecs, layers=[1], coefficient=coef),
        tok,
        PROMPTS[:2],
        vecs,
        [2],
        max_new_tokens=4,
    )
    for i in range(2):
        one = record_projections(
            SteeredModel(model, vecs, layers=[1], coefficient=float(coef[i])),
            tok,
            PROMPTS[i : i + 1],
            vecs,
            [2],
            max_new_tokens=4,
        )
        assert one.token_ids[0] == res.token_ids[i]
        torch.testing.assert_close(one.projection[0], res.projection[i], equal_nan=True)


def test_peft_model():
    from peft import LoraConfig, get_peft_model

    model, tok, vecs = make_model(), make_tokenizer(), _vectors()
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    tuned = get_peft_model(model, lora).eval()
    res = record_projections(tuned, tok, PROMPTS[:2], vecs, LAYERS, max_new_tokens=4)
    _assert_matches_manual(tuned, res, vecs)


def test_save_load_rows_summary_and_plot(tmp_path):
    model, tok, vecs = make_model(), make_tokenizer(), _vectors()
    res = record_projections(model, tok, PROMPTS, vecs, LAYERS, max_new_tokens=4)
    res.save(tmp_path / "proj")
    back = ProjectionResult.load(tmp_path / "proj")
    assert back.token_ids == res.token_ids and back.tokens == res.tokens
    assert back.prompt_lengths == res.prompt_lengths and back.layers == res.layers
    for a, b in zip(back.projection, res.projection):
        torch.testing.assert_close(a, b, equal_nan=True)
    rows = res.rows()
    assert len(rows) == sum(len(LAYERS) * len(t) for t in res.token_ids)
    first = next(r for r in rows if r["prompt"] == 1 and r["layer"] == 2 and r["position"] == 0)
    assert first["segment"] == "generated"
    assert first["projection"] == pytest.approx(float(res.projection[1][2, res.prompt_lengths[1]]))
    summary = res.summary_rows(last=2, name="base")
    gen = torch.cat([p[0, n:] for p, n in zip(res.projection, res.prompt_lengths)])
    assert summary[0]["model"] == "base" and summary[0]["layer"] == 0
    assert summary[0]["generated_projection"] == pytest.approx(float(torch.nanmean(gen)))
    last2 = torch.cat([p[0, n - 2 : n] for p, n in zip(res.projection, res.prompt_lengths)])
    assert summary[0]["last2_projection"] == pytest.approx(float(last2.mean()))
    png = plot_projections({"a": res, "b": back}, tmp_path / "p.png", index=2, prompt_tokens=3)
    assert Image.open(png).size[0] > 100
    png = plot_projections(res, tmp_path / "c.png", index=0, kind="cosine")
    assert Image.open(png).size[0] > 100
    with pytest.raises(ValueError, match="unknown kind"):
        plot_projections(res, tmp_path / "x.png", kind="norm")


def test_bad_input_fails_before_generating():
    model, tok, vecs = make_model(), make_tokenizer(), _vectors(layers=(1,))
    with pytest.raises(ValueError, match="no vector for layers"):
        record_projections(model, tok, PROMPTS, vecs, [2])
    with pytest.raises(ValueError, match="non-empty list"):
        record_projections(model, tok, [], vecs)
    with pytest.raises(ValueError, match="max_new_tokens"):
        record_projections(model, tok, PROMPTS, vecs, max_new_tokens=0)
    with pytest.raises(ValueError, match="num_beams must be 1"):
        record_projections(model, tok, PROMPTS, vecs, num_beams=2)
    with pytest.raises(ValueError, match="context"):
        record_projections(model, tok, PROMPTS, vecs, max_new_tokens=500)
    with pytest.raises(ValueError, match="hidden size"):
        record_projections(model, tok, PROMPTS, {1: torch.ones(8)})
    steered = SteeredModel(model, vecs, layers=[1], coefficient=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="coefficients for 3 prompts"):
        record_projections(steered, tok, PROMPTS, vecs)


def test_hooks_are_removed_when_generation_fails():
    model, tok, vecs = make_model(), make_tokenizer(), _vectors()
    blocks = find_layers(model)

    def fail(module, args, output):
        raise RuntimeError("boom")

    handle = blocks[3].register_forward_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            record_projections(model, tok, PROMPTS, vecs, LAYERS, max_new_tokens=2)
        assert [len(b._forward_hooks) for b in blocks] == [0, 0, 0, 1]
        assert not model.model._forward_pre_hooks
    finally:
        handle.remove()
