import pytest
import torch
from conftest import make_model, make_tokenizer
from transformers import DynamicCache

from reptune.hooks import intervene, recording
from reptune.steering import SteeredModel
from reptune.tokenization import encode_batch
from reptune.vectors import SteeringVectors

PROMPTS = ["the quick brown fox", "I love", "Question: is it true?"]


def _vectors(seed=0, layers=(1, 2)):
    g = torch.Generator().manual_seed(seed)
    return SteeringVectors({layer: torch.randn(32, generator=g) for layer in layers})


def _decode_with_cache(steered, batch, steps=3):
    """Prefill, then feed greedy tokens one at a time through the KV cache; return all logits."""
    cache = DynamicCache()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = [
        steered(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
        ).logits
    ]
    seq = ids
    for _ in range(steps):
        nxt = logits[-1][:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
        mask = torch.cat([mask, torch.ones_like(nxt)], 1)
        pos = pos[:, -1:] + 1
        logits.append(
            steered(
                input_ids=nxt,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
            ).logits
        )
    return seq, mask, torch.cat(logits, 1)


@pytest.mark.parametrize("positions", ["all", "generated", "prompt", [-1, 1]])
def test_kv_cache_equals_no_cache(positions):
    model, tok = make_model(), make_tokenizer()
    batch = encode_batch(tok, PROMPTS)
    prompt_len = batch["input_ids"].shape[1]
    coef = torch.tensor([4.0, -3.0, 8.0])
    steered = SteeredModel(
        model, _vectors(), coefficient=coef, positions=positions, coefficient_unit="raw"
    )
    with torch.no_grad():
        seq, mask, cached = _decode_with_cache(steered, batch)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with steered.steering(prompt_length=prompt_len):
            full = model(input_ids=seq, attention_mask=mask, position_ids=pos).logits
    real = mask.bool()
    diff = (cached - full)[real].abs().max()
    assert diff <= 1e-5
    # and the steering did something
    with torch.no_grad():
        plain = model(input_ids=seq, attention_mask=mask, position_ids=pos).logits
    assert (plain - full)[real].abs().max() > 1e-3


def test_generate_with_and_without_cache_agree():
    model, tok = make_model(), make_tokenizer()
    batch = encode_batch(tok, PROMPTS)
    steered = SteeredModel(
        model, _vectors(), coefficient=6.0, positions="generated", coefficient_unit="raw"
    )
    kwargs = dict(
        max_new_tokens=5, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    a = steered.generate(**batch, use_cache=True, **kwargs)
    b = steered.generate(**batch, use_cache=False, **kwargs)
    assert torch.equal(a.sequences, b.sequences)
    for sa, sb in zip(a.scores, b.scores):
        assert (sa - sb).abs().max() <= 1e-5


def test_left_padded_batch_equals_one_at_a_time():
    model, tok = make_model(), make_tokenizer()
    steered = SteeredModel(
        model, _vectors(), coefficient=5.0, positions="all", coefficient_unit="raw"
    )
    kwargs = dict(
        max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    batched = steered.generate(**encode_batch(tok, PROMPTS), **kwargs)
    for row, prompt in enumerate(PROMPTS):
        alone = steered.generate(**encode_batch(tok, [prompt]), **kwargs)
        n = alone.sequences.shape[1]
        assert torch.equal(batched.sequences[row, -4:], alone.sequences[0, n - 4 :])
        for sb, sa in zip(batched.scores, alone.scores):
            assert (sb[row] - sa[0]).abs().max() <= 1e-5


def test_per_row_coefficients_equal_separate_runs():
    model, tok = make_model(), make_tokenizer()
    coefs = [-4.0, 0.0, 2.5, 9.0]
    batch = encode_batch(tok, ["I love"] * 4)
    steered = SteeredModel(model, _vectors(), positions="all", coefficient_unit="raw")
    with torch.no_grad():
        swept = steered(**batch, coefficient=torch.tensor(coefs)).logits
        for row, c in enumerate(coefs):
            single = steered(**encode_batch(tok, ["I love"]), coefficient=c).logits
            assert (swept[row] - single[0]).abs().max() <= 1e-5
    gen = steered.generate(
        **batch, coefficient=torch.tensor(coefs), max_new_tokens=3, do_sample=False
    )
    for row, c in enumerate(coefs):
        one = steered.generate(
            **encode_batch(tok, ["I love"]), coefficient=c, max_new_tokens=3, do_sample=False
        )
        assert torch.equal(gen[row], one[0])


def test_generated_positions_leave_prompt_untouched():
    model, tok = make_model(), make_tokenizer()
    batch = encode_batch(tok, PROMPTS)
    steered = SteeredModel(
        model, _vectors(), coefficient=10.0, positions="generated", coefficient_unit="raw"
    )
    with torch.no_grad():
        plain = model(**batch).logits
        prefill = steered(**batch).logits
    assert torch.equal(plain, prefill)
    plain_gen = model.generate(
        **batch, max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    steer_gen = steered.generate(
        **batch, max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    # the first generated token is predicted from the prompt alone: unchanged
    assert torch.equal(plain_gen.scores[0], steer_gen.scores[0])


def test_ablate_leaves_zero_projection():
    model, tok = make_model(), make_tokenizer()
    vecs = _vectors(layers=(2,))
    batch = encode_batch(tok, PROMPTS)
    rec, fns = recording([2])
    with SteeredModel(model, vecs, mode="ablate", coefficient_unit="raw"), intervene(model, fns):
        with torch.no_grad():
            model(**batch)
    unit = vecs[2] / vecs[2].norm()
    proj = rec.hidden(2)[batch["attention_mask"].bool()] @ unit
    assert proj.abs().max() <= 1e-5


def test_context_manager_restores_model_exactly():
    model, tok = make_model(), make_tokenizer()
    batch = encode_batch(tok, PROMPTS)
    with torch.no_grad():
        before = model(**batch).logits
        with SteeredModel(model, _vectors(), coefficient=3.0, coefficient_unit="raw") as steered:
            during = model(**batch).logits
            assert torch.equal(steered(**batch).logits, during)  # no double steering
        after = model(**batch).logits
    assert not torch.equal(before, during)
    assert torch.equal(before, after)
    with pytest.raises(ZeroDivisionError):
        with SteeredModel(model, _vectors(), coefficient=3.0, coefficient_unit="raw"):
            raise ZeroDivisionError("inside the block")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)
    assert all(not block._forward_hooks for block in model.model.layers)


def test_attributes_pass_through_for_eval_harnesses():
    model = make_model()
    steered = SteeredModel(model, _vectors(), coefficient_unit="raw")
    assert steered.config is model.config
    assert steered.device == model.device
    assert steered.generation_config is model.generation_config
    assert steered.name_or_path == model.name_or_path


def test_bad_inputs():
    model, tok = make_model(), make_tokenizer()
    batch = encode_batch(tok, PROMPTS)
    steered = SteeredModel(model, _vectors(), coefficient_unit="raw")
    with pytest.raises(ValueError, match="coefficient has 2 values but the batch has 3"):
        steered(**batch, coefficient=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="coefficient has 2 values"):
        steered.generate(**batch, coefficient=torch.tensor([1.0, 2.0]), max_new_tokens=1)
    with pytest.raises(ValueError, match="NaN"):
        SteeredModel(model, _vectors(), coefficient=float("nan"), coefficient_unit="raw")
    with pytest.raises(ValueError, match="unknown mode"):
        SteeredModel(model, _vectors(), mode="multiply", coefficient_unit="raw")
    with pytest.raises(ValueError, match="hidden size 16"):
        SteeredModel(model, {1: torch.ones(16)}, coefficient_unit="raw")
    with pytest.raises(ValueError, match="only 4 decoder blocks"):
        SteeredModel(model, {9: torch.ones(32)}, coefficient_unit="raw")
    with pytest.raises(ValueError, match="NaN or inf"):
        SteeredModel(model, {1: torch.tensor([float("inf")] * 32)}, coefficient_unit="raw")
    with pytest.raises(ValueError, match="no vector for layers"):
        SteeredModel(model, _vectors(), layers=[3], coefficient_unit="raw")
    with pytest.raises(ValueError, match="unknown positions"):
        SteeredModel(model, _vectors(), positions="middle", coefficient_unit="raw")


def test_residual_norm_unit_equals_raw_steering_with_the_rescaled_vector(model, tokenizer):
    vecs = _vectors().with_residual_norms({1: 3.0, 2: 5.0})
    batch = encode_batch(tokenizer, ["hello there", "a fox"], position_ids=True)
    scaled = SteeringVectors({k: vecs.direction(k, "residual_norm") for k in vecs.layers})
    with torch.no_grad():
        by_unit = SteeredModel(model, vecs, coefficient=0.5)(**batch).logits
        by_hand = SteeredModel(model, scaled, coefficient=0.5, coefficient_unit="raw")(**batch)
    assert torch.allclose(by_unit, by_hand.logits, atol=1e-6)
    with pytest.raises(ValueError, match="residual norm"):
        SteeredModel(model, _vectors(), coefficient=0.5)
