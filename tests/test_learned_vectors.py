"""Learned steering vectors: they move the steered likelihood the intended way, leave the model as
it was, and are used by every consumer exactly as an extracted vector with the same tensor."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_tokenizer
from dist.rt_common import make_args, make_rows

from reptune.publish.gguf_export import export_control_vector, load_control_vector
from reptune.publish.vector_hub import build_vector_card
from reptune.steering import SteeredModel
from reptune.training import RepTuneCollator, RepTuneTrainer
from reptune.training.learned_vectors import learn_vectors, sequence_log_likelihoods
from reptune.vectors import SteeringVectors

PROMPTS = [
    f"Is {s} {w}?" for s in ("the sky", "a dog", "the sea", "my day") for w in ("green", "sad")
]
HAPPY, SAD = "I love this wonderful happy day.", "I hate this terrible sad day."


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model():
    return make_model("llama", n_layers=4, hidden=32)


def _mean_log_likelihood(model, tok, vecs, prompts, answer, coefficient):
    """Mean length-normalised log-likelihood of ``answer`` after each prompt, steered."""
    collate = RepTuneCollator(tok, rep_positions="all")
    batch = collate([{"prompt": p, "completion": answer} for p in prompts])
    steered = SteeredModel(model, vecs, layers=vecs.layers, coefficient=coefficient)
    with torch.no_grad():
        logits = steered(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    total, count = sequence_log_likelihoods(logits.logits, batch["labels"])
    return float((total / count).mean())


def test_sequence_log_likelihoods_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]]))
    labels = torch.tensor([[-100, 1, 0]])  # predicts token 1 after column 0, token 0 after 1
    total, count = sequence_log_likelihoods(logits, labels)
    assert count.tolist() == [2]
    assert total.item() == pytest.approx(float(torch.log(torch.tensor(0.5 * 0.25))), rel=1e-6)


def test_lm_vector_raises_the_steered_likelihood_of_the_behaviour_rows(model, tok):
    rows = [{"prompt": p, "completion": HAPPY} for p in PROMPTS]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    vecs = learn_vectors(
        model, tok, rows, [1], "lm", steps=30, learning_rate=0.1, coefficients=(1.0, 1.0)
    )
    start = SteeringVectors(
        {1: torch.randn(32, generator=torch.Generator().manual_seed(0))},
        {"residual_norms": vecs.residual_norms},
    )
    steered = _mean_log_likelihood(model, tok, vecs, PROMPTS, HAPPY, 1.0)
    plain = _mean_log_likelihood(model, tok, vecs, PROMPTS, HAPPY, 0.0)
    initial = _mean_log_likelihood(model, tok, start, PROMPTS, HAPPY, 1.0)
    assert steered > plain + 0.03 and steered > initial + 0.03, (steered, plain, initial)
    assert vecs.metadata["last_loss"] < vecs.metadata["first_loss"]
    # The model is handed back as it came: same weights, same flags, no hooks, eval mode.
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    meta = vecs.metadata
    assert (meta["method"], meta["objective"], meta["steps"], meta["learning_rate"]) == (
        "learned",
        "lm",
        30,
        0.1,
    )
    assert meta["data_fingerprint"] and meta["model_type"] == "llama"


def test_preference_vector_prefers_the_behaviour_answer_only_when_steered_positively(model, tok):
    rows = [{"prompt": p, "chosen": HAPPY, "rejected": SAD} for p in PROMPTS]
    vecs = learn_vectors(
        model, tok, rows, [1], "preference", steps=30, learning_rate=0.1, coefficients=(0.5, 2.0)
    )

    def margin(c):
        happy = _mean_log_likelihood(model, tok, vecs, PROMPTS, HAPPY, c)
        return happy - _mean_log_likelihood(model, tok, vecs, PROMPTS, SAD, c)

    up, zero, down = margin(1.0), margin(0.0), margin(-1.0)
    assert up > zero + 0.03 and down < zero - 0.03, (up, zero, down)
    assert vecs.metadata["negative"] == "subtract" and vecs.metadata["coefficients"] == [0.5, 2.0]


def test_null_negative_and_bad_input(model, tok):
    rows = [{"prompt": p, "chosen": HAPPY, "rejected": SAD} for p in PROMPTS[:4]]
    vecs = learn_vectors(
        model, tok, rows, [2], "preference", steps=2, batch_size=2, negative="null"
    )
    assert vecs.layers == [2] and vecs.metadata["negative"] == "null"
    with pytest.raises(ValueError, match="'chosen', 'rejected'"):
        learn_vectors(model, tok, [{"prompt": "x", "completion": "y"}], [1], "preference")
    with pytest.raises(ValueError, match="0 < low <= high"):
        learn_vectors(model, tok, rows, [1], "preference", coefficients=(0.3, 0.1))
    with pytest.raises(ValueError, match="unknown objective"):
        learn_vectors(model, tok, rows, [1], "dpo")
    start = SteeringVectors({2: torch.arange(32.0) - 10})
    kept = learn_vectors(
        model, tok, rows, [2], "preference", steps=1, learning_rate=0.0, init=start
    )
    torch.testing.assert_close(kept[2], start[2] / start[2].norm())
    with pytest.raises(ValueError, match="is zero"):
        learn_vectors(
            model, tok, rows, [2], "preference", init=SteeringVectors({2: torch.zeros(32)})
        )


def test_learned_vectors_are_used_like_any_other(tmp_path, model, tok):
    """Saved, loaded, exported to GGUF, carded and steered exactly as vectors built from the same
    tensor, and the steer objective takes them."""
    rows = [{"prompt": p, "completion": HAPPY} for p in PROMPTS]
    learned = learn_vectors(model, tok, rows, [1, 2], "lm", steps=3)
    same = SteeringVectors(
        {k: learned[k].clone() for k in learned.layers},
        {**SteeringVectors.describe_model(model), "residual_norms": learned.residual_norms},
    )
    loaded = SteeringVectors.load(learned.save(tmp_path / "v"), model=model)
    assert loaded.metadata["objective"] == "lm" and loaded.residual_norms == learned.residual_norms
    batch = tok(["Is the sky green? It is."], return_tensors="pt")
    outputs = []
    for vecs in (learned, loaded, same):
        with torch.no_grad():
            outputs.append(SteeredModel(model, vecs, coefficient=0.7)(**batch).logits)
        path = export_control_vector(vecs, tmp_path / f"{len(outputs)}.gguf")
        back = load_control_vector(path)
        for layer in vecs.layers:
            torch.testing.assert_close(back[layer], same.direction(layer), rtol=0, atol=1e-6)
    assert torch.equal(outputs[0], outputs[2]) and torch.equal(outputs[1], outputs[2])
    with torch.no_grad():
        assert not torch.allclose(outputs[0], model(**batch).logits)
    card = str(build_vector_card(learned))
    assert "objective `lm`, 3 steps" in card
    targets = []
    for vecs in (learned, same):
        args = make_args(
            tmp_path / "t", rep_target="steer", steer_coefficient=0.5, rep_layers=[1], max_steps=1
        )
        trainer = RepTuneTrainer(
            model, args, vectors=vecs, train_dataset=make_rows(4), processing_class=tok
        )
        batch = trainer.data_collator(make_rows(2))
        targets.append(trainer._reference(model, batch, batch["rep_mask"])[1])
    assert torch.equal(targets[0], targets[1])
