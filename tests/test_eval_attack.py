import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune.behaviours.honesty import CLAIM_QUESTION
from reptune.evaluation.ab.datasets import ABItem
from reptune.evaluation.ab.letters import letter_token_ids
from reptune.evaluation.adversarial.attack import (
    AttackConfig,
    attack_items,
    compare_attacks,
    gcg_attack,
)
from reptune.evaluation.adversarial.gcg import (
    allowed_tokens,
    initial_suffix,
    prefix_cache,
    split_prompt,
    token_gradients,
)
from reptune.evaluation.stats import rate
from reptune.steering import SteeredModel
from reptune.vectors import SteeringVectors

CLAIMS = ["the fox is brown", "the dog is lazy", "a day is happy", "the sky is green"]
ITEMS = [ABItem(CLAIM_QUESTION.format(claim=c), "AB"[i % 2]) for i, c in enumerate(CLAIMS)]
SMALL = dict(steps=6, candidates=16, topk=16, suffix_length=4)


def _model(arch="llama"):
    model = make_model(arch)
    # A sharper LM head than the random init's near-uniform one, so letter probabilities
    # depend on the suffix enough to compare search strategies.
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    return model


def _manual_loss(model, tok, item, suffix_ids, config):
    """-log P(negative letter) and the letter margin from one plain forward on the ids."""
    before, after = split_prompt(tok, item, config.system, config.answer_prefix)
    ids = torch.tensor([[*before, *suffix_ids, *after]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, -1], -1)
    neg = torch.logsumexp(logp[letter_token_ids(tok, item.other[0])], -1)
    tgt = torch.logsumexp(logp[letter_token_ids(tok, item.target)], -1)
    return float(-neg), float(neg - tgt)


def test_best_loss_never_rises_and_ends_lower():
    model, tok = _model(), make_tokenizer()
    cfg = AttackConfig(**SMALL, seed=0)
    trace = gcg_attack(model, tok, ITEMS[0], cfg)
    assert len(trace.losses) == cfg.steps + 1 and trace.steps_run == cfg.steps
    assert 0.5 * cfg.steps * cfg.candidates < trace.evaluated <= cfg.steps * cfg.candidates
    assert all(b <= a for a, b in zip(trace.losses, trace.losses[1:]))
    assert trace.losses[-1] < trace.losses[0]
    # The reported suffix reproduces the final loss, and its text tokenizes back to it.
    loss, margin = _manual_loss(model, tok, ITEMS[0], trace.suffix_ids, cfg)
    assert loss == pytest.approx(trace.losses[-1], abs=1e-4)
    assert trace.success == (margin > 0)
    assert tok(trace.suffix, add_special_tokens=False)["input_ids"] == trace.suffix_ids
    again = gcg_attack(model, tok, ITEMS[0], cfg)
    assert again.suffix_ids == trace.suffix_ids and again.losses == trace.losses  # seeded


def test_gradient_candidates_beat_random_ones_of_the_same_budget():
    model, tok = _model(), make_tokenizer()
    gains = {}
    for method in ("gradient", "random"):
        gains[method] = [
            (t.losses[0] - t.losses[-1])
            for seed in (0, 1)
            for t in attack_items(
                model, tok, ITEMS, AttackConfig(**SMALL, seed=seed, method=method)
            ).traces
        ]
    wins = sum(g > r for g, r in zip(gains["gradient"], gains["random"]))
    assert wins >= 6, gains  # of 8 item x seed pairs
    assert sum(gains["gradient"]) > 1.1 * sum(gains["random"])


def _one_hot_gradient(model, tok, item, suffix, config):
    """Reference: the gradient through one_hot @ W (times the embedding scale)."""
    embed = model.get_input_embeddings()
    before, after = split_prompt(tok, item, config.system, config.answer_prefix)
    one_hot = torch.nn.functional.one_hot(torch.tensor(suffix), embed.weight.shape[0]).float()
    one_hot.requires_grad_(True)
    scale = float(getattr(embed, "embed_scale", 1.0))
    parts = [
        embed(torch.tensor([before])),
        (one_hot @ embed.weight * scale)[None],
        embed(torch.tensor([after])),
    ]
    logits = model(inputs_embeds=torch.cat(parts, 1)).logits[0, -1]
    logp = torch.log_softmax(logits, -1)
    loss = -torch.logsumexp(logp[letter_token_ids(tok, item.other[0])], -1)
    loss.backward()
    return one_hot.grad


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("arch", ["llama", "gemma3", "steered"])
def test_token_gradients_equal_the_one_hot_gradient(arch, cached):
    model, tok = _model("gemma3" if arch == "gemma3" else "llama"), make_tokenizer()
    if arch == "steered":
        vecs = SteeringVectors({1: torch.randn(32, generator=torch.Generator().manual_seed(0))})
        model = SteeredModel(model, vecs, layers=[1], coefficient=3.0, coefficient_unit="raw")
    cfg, item, suffix = AttackConfig(**SMALL), ITEMS[1], [40, 41, 42, 43]
    before, after = split_prompt(tok, item)
    neg, tgt = letter_token_ids(tok, "A"), letter_token_ids(tok, "B")
    cache = prefix_cache(model, before) if cached else None
    grad = token_gradients(model, before, suffix, after, neg, tgt, cache)
    expected = _one_hot_gradient(model, tok, item, suffix, cfg)
    torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_prefix_cache_changes_nothing(positions):
    tok = make_tokenizer()
    vecs = SteeringVectors({1: torch.randn(32, generator=torch.Generator().manual_seed(0))})
    model = SteeredModel(
        _model(), vecs, layers=[1], coefficient=3.0, coefficient_unit="raw", positions=positions
    )
    traces = [
        gcg_attack(model, tok, ITEMS[1], AttackConfig(**{**SMALL, "steps": 3}, prefix_cache=c))
        for c in (False, True)
    ]
    assert traces[0].suffix_ids == traces[1].suffix_ids
    assert traces[0].losses == pytest.approx(traces[1].losses, abs=1e-4)
    assert traces[0].p_negative == pytest.approx(traces[1].p_negative, rel=1e-3)


def test_steered_and_peft_models_are_attacked_through_hooks_and_adapters():
    from peft import LoraConfig, get_peft_model

    tok = make_tokenizer()
    base = _model()
    vecs = SteeringVectors({1: torch.randn(32, generator=torch.Generator().manual_seed(0))})
    steered = SteeredModel(base, vecs, layers=[1], coefficient=3.0, coefficient_unit="raw")
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    tuned = get_peft_model(_model(), lora).eval()
    cfg = AttackConfig(**{**SMALL, "steps": 3})
    initial, init_ids = {}, tok(cfg.init, add_special_tokens=False)["input_ids"] * 4
    for name, model in (("base", base), ("steered", steered), ("tuned", tuned)):
        trace = gcg_attack(model, tok, ITEMS[2], cfg)
        start, _ = _manual_loss(model, tok, ITEMS[2], init_ids, cfg)
        initial[name] = trace.losses[0]
        assert trace.losses[0] == pytest.approx(start, abs=1e-4)
        end, _ = _manual_loss(model, tok, ITEMS[2], trace.suffix_ids, cfg)
        assert end == pytest.approx(trace.losses[-1], abs=1e-4)
    assert initial["steered"] != pytest.approx(initial["base"], abs=1e-3)
    assert not base.model.layers[1]._forward_hooks  # the steering hooks are gone


def test_compare_attacks_reports_rates_with_intervals():
    tok = make_tokenizer()
    cfg = AttackConfig(steps=2, candidates=8, topk=8, suffix_length=3)
    results = compare_attacks([("base", _model), ("other", lambda: _model())], tok, ITEMS, cfg)
    assert list(results) == ["base", "other"]
    row = results["base"].summary("base")
    k = sum(t.success for t in results["base"].traces)
    expected = rate(k, len(ITEMS))
    assert row["model"] == "base" and row["n"] == 4 and row["successes"] == k
    assert (row["success_low"], row["success_high"]) == (expected.low, expected.high)
    assert row["steps"] == 2 and row["candidates"] == 8 and row["method"] == "gradient"
    assert row["mean_final_loss"] <= row["mean_initial_loss"]


def test_initial_suffix_round_trips():
    tok = make_tokenizer()
    allowed = allowed_tokens(tok, 320, ascii_only=True)
    spaced = initial_suffix(tok, "ha", 3, allowed)  # "ha" and " ha" are tokens
    assert tok.decode(spaced.tolist()) == "ha ha ha" and len(spaced) == 3
    # "! ! !" is five tokens here (the spaces are tokens of their own): the joined form is used.
    assert tok.decode(initial_suffix(tok, "!", 3, allowed).tolist()) == "!!!"
    with pytest.raises(ValueError, match="round trip"):
        initial_suffix(tok, "quick brown", 2, allowed)


def test_early_stop_and_bad_input():
    model, tok = _model(), make_tokenizer()
    with pytest.raises(ValueError, match="positive int"):
        AttackConfig(steps=0)
    with pytest.raises(ValueError, match="method"):
        AttackConfig(method="beam")
    with pytest.raises(ValueError, match="A/B items"):
        attack_items(model, tok, [ABItem("q?", "A", ("A", "B", "C"))], AttackConfig(**SMALL))
    with pytest.raises(ValueError, match="init"):
        gcg_attack(model, tok, ITEMS[0], AttackConfig(**SMALL, init="the quick"))
    # An item the model already answers negatively stops at once under early_stop.
    flipped = [ABItem(i.question, i.other[0]) for i in ITEMS[:2]]
    traces = attack_items(model, tok, ITEMS[:2] + flipped, AttackConfig(**SMALL, early_stop=True))
    for trace in traces.traces:
        if trace.success_before:
            assert trace.steps_run == 0 and trace.success
