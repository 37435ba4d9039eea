"""The steer objective (tune until the model behaves as steered), the frozen reference pass, the
early stop, and trainer state that must not outlive its owner."""

from __future__ import annotations

import pytest
import torch
from dist.rt_common import (
    GradCapture,
    make_args,
    make_rows,
    make_tokenizer,
    random_vectors,
    sequential,
    tiny_model,
)

from reptune.extract import measure_residual_norms
from reptune.layers import find_layers
from reptune.steering import SteeredModel
from reptune.tokenization import encode_batch
from reptune.training import RepTuneConfig, RepTuneTrainer

STEER = dict(rep_target="steer", steer_coefficient=0.5, rep_positions="all", rep_weight=1.0)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _vectors(model, tok, layers, seed=0):
    vecs = random_vectors(32, layers, seed=seed)
    texts = [r["prompt"] for r in make_rows(8)]
    return vecs.with_residual_norms(measure_residual_norms(model, tok, texts, layers))


class _Counter:
    """Forward hook counting calls of one block."""

    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, *args):
        self.calls += 1


def test_steer_config_needs_a_finite_coefficient(tmp_path):
    with pytest.raises(ValueError, match="needs steer_coefficient"):
        RepTuneConfig(output_dir=str(tmp_path), rep_target="steer")
    with pytest.raises(ValueError, match="needs steer_coefficient"):
        RepTuneConfig(output_dir=str(tmp_path), rep_target="steer", steer_coefficient=float("inf"))
    with pytest.raises(ValueError, match="only used with rep_target='steer'"):
        RepTuneConfig(output_dir=str(tmp_path), steer_coefficient=0.3)
    with pytest.raises(ValueError, match="rep_weight must be a finite number"):
        RepTuneConfig(output_dir=str(tmp_path), rep_weight=float("nan"))
    with pytest.raises(ValueError, match="unknown coefficient_unit"):
        RepTuneConfig(output_dir=str(tmp_path), coefficient_unit="percent")


@pytest.mark.parametrize("positions", ["all", "prompt", "completion", "-1", "-3,-2"])
def test_reference_target_is_the_steered_models_activation(tmp_path, tok, positions):
    """The target at the steered layer is h_ref + c * v at the selected positions (h_ref
    elsewhere), from a pass that stops there, for every kind of position spec."""
    model = tiny_model(init_lora_weights=False)
    vecs = _vectors(model, tok, [1])
    args = make_args(tmp_path, rep_layers=[1], **{**STEER, "rep_positions": positions})
    trainer = RepTuneTrainer(
        model, args, vectors=vecs, train_dataset=make_rows(4), processing_class=tok
    )
    batch = trainer.data_collator(make_rows(3))
    mask = batch["rep_mask"]
    deeper = _Counter(find_layers(model)[2])
    try:
        targets = trainer._reference(model, batch, mask)
    finally:
        deeper.handle.remove()
    assert deeper.calls == 0  # the reference pass never runs a block past the deepest it needs
    with torch.no_grad(), model.disable_adapter():
        feed = {k: batch[k] for k in ("input_ids", "attention_mask")}
        hidden = model(**feed, output_hidden_states=True).hidden_states[2]  # block 1's output
    delta = 0.5 * vecs.direction(1, "residual_norm")
    assert 0 < mask.sum() < batch["attention_mask"].sum() or positions == "all"
    expected = hidden + mask.unsqueeze(-1) * delta
    torch.testing.assert_close(targets[1], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lm_weight", [0.3, 0.0])
def test_gradient_accumulation_matches_one_big_batch_with_the_steer_term(tmp_path, tok, lm_weight):
    rows = make_rows(4)
    grads, logs = [], []
    for bs, ga in ((4, 1), (1, 4)):
        model = tiny_model(init_lora_weights=False)
        vecs = _vectors(model, tok, [1, 2])
        args = make_args(
            tmp_path / f"ga{ga}-{lm_weight}",
            per_device_train_batch_size=bs,
            gradient_accumulation_steps=ga,
            max_steps=1,
            learning_rate=0.0,
            rep_layers=[1, 2],
            lm_weight=lm_weight,
            **STEER,
        )
        trainer = sequential(
            RepTuneTrainer(model, args, vectors=vecs, train_dataset=rows, processing_class=tok)
        )
        capture = GradCapture()
        trainer.add_callback(capture)
        trainer.train()
        grads.append(capture.grads[0])
        logs.append(trainer.state.log_history[0])
    big, small = grads
    assert big.keys() == small.keys() and len(big) > 0
    assert max((big[k] - small[k]).abs().max().item() for k in big) <= 1e-5
    assert max(g.abs().max().item() for g in big.values()) > 1e-4
    for key in ("loss", "rep_loss", "steer_distance_layer_1", "steer_distance_layer_2"):
        assert logs[0][key] == pytest.approx(logs[1][key], rel=1e-5)


def _lora_below(layer: int):
    from conftest import make_model
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    config = LoraConfig(
        r=8,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        layers_to_transform=list(range(layer + 1)),
        init_lora_weights=False,
    )
    return get_peft_model(make_model("llama", n_layers=4, hidden=32), config)


def test_early_stop_skips_later_blocks_and_gives_the_same_gradients(tmp_path, tok):
    """lm_weight=0 with LoRA only up to the rep layer: the forward stops after it."""
    grads = []
    for early in (True, False):
        model = _lora_below(1)
        vecs = _vectors(model, tok, [1])
        args = make_args(
            tmp_path / str(early),
            max_steps=1,
            learning_rate=0.0,
            rep_layers=[1],
            lm_weight=0.0,
            **STEER,
        )
        trainer = sequential(
            RepTuneTrainer(
                model, args, vectors=vecs, train_dataset=make_rows(4), processing_class=tok
            )
        )
        assert trainer._early_stop
        trainer._early_stop = early
        capture = GradCapture()
        trainer.add_callback(capture)
        last = _Counter(find_layers(model)[3])
        try:
            trainer.train()
        finally:
            last.handle.remove()
        assert (last.calls == 0) == early
        grads.append(capture.grads[0])
    stopped, full = grads
    assert stopped.keys() == full.keys() and len(stopped) > 0
    assert max((stopped[k] - full[k]).abs().max().item() for k in stopped) <= 1e-6


def test_no_early_stop_when_a_later_weight_trains(tmp_path, tok):
    model = tiny_model()  # LoRA on every block: block 3 could learn from a token loss
    args = make_args(tmp_path, rep_layers=[1], lm_weight=0.0, **STEER)
    vecs = _vectors(model, tok, [1])
    trainer = RepTuneTrainer(
        model, args, vectors=vecs, train_dataset=make_rows(4), processing_class=tok
    )
    assert not trainer._early_stop


def _next_token_kl(p_logits, q_logits, mask):
    """Mean KL(p || q) over the real positions."""
    p, q = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1)
    return float(kl[mask.bool()].mean())


def test_steer_tuned_model_behaves_as_steered_without_hooks(tmp_path, tok):
    """After tuning, KL(steered || tuned) on held-out prompts is at most 10% of KL(steered ||
    base). GPT-2's biases let selected-layer tuning add the steering vector exactly."""
    from conftest import make_model

    model = make_model("gpt2", n_layers=4, hidden=32)
    base = make_model("gpt2", n_layers=4, hidden=32)
    vecs = _vectors(model, tok, [1])
    args = make_args(
        tmp_path,
        rep_layers=[1],
        lm_weight=0.0,
        train_layers=[1],
        learning_rate=3e-2,
        max_steps=80,
        per_device_train_batch_size=8,
        **{**STEER, "steer_coefficient": 2.0},
    )
    trainer = RepTuneTrainer(
        model, args, vectors=vecs, train_dataset=make_rows(24), processing_class=tok
    )
    trainer.train()
    held_out = [r["prompt"] + " " + r["completion"] for r in make_rows(8, offset=40)]
    batch = encode_batch(tok, held_out, position_ids=True)
    steered = SteeredModel(base, vecs, layers=[1], coefficient=2.0)
    with torch.no_grad():
        target = steered(**batch).logits
        tuned = model(**batch).logits
        plain = base(**batch).logits
    far, near = (
        _next_token_kl(target, plain, batch["attention_mask"]),
        _next_token_kl(target, tuned, batch["attention_mask"]),
    )
    assert far > 1e-3  # the steering changes the distribution
    assert near <= 0.1 * far
    assert not any(m._forward_hooks for m in model.modules())  # no hooks left on the tuned model


def test_peft_config_and_mode_restoration(tmp_path, tok):
    from conftest import make_model
    from peft import LoraConfig, PeftModel

    model = make_model("llama", n_layers=4, hidden=32).eval()
    args = make_args(tmp_path, rep_layers=[1], max_steps=1)
    trainer = RepTuneTrainer(
        model,
        args,
        vectors=random_vectors(32, [1]),
        train_dataset=make_rows(4),
        processing_class=tok,
        peft_config=LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
    )
    assert isinstance(trainer.model, PeftModel)
    trainer.train()
    assert not trainer.model.training  # handed back in eval mode, as it came in
    with pytest.raises(ValueError, match="train_dataset is empty"):
        RepTuneTrainer(
            model, args, vectors=random_vectors(32, [1]), train_dataset=[], processing_class=tok
        )


def _tensor_hooks(model):
    return sum(len(p._backward_hooks or {}) for p in model.parameters())


def test_routing_hooks_never_outlive_the_step(tmp_path, tok, monkeypatch):
    model = tiny_model(init_lora_weights=False)
    args = make_args(tmp_path, rep_layers=[1], rep_params="v_proj", lm_params="o_proj", max_steps=2)
    trainer = RepTuneTrainer(
        model,
        args,
        vectors=random_vectors(32, [1]),
        train_dataset=make_rows(8),
        processing_class=tok,
    )
    trainer.train()
    assert _tensor_hooks(model) == 0
    # A step that fails after compute_loss attached the hooks, before its backward.
    monkeypatch.setattr(trainer.accelerator, "backward", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        trainer.train()
    assert _tensor_hooks(model) == 0
    batch = trainer.data_collator(make_rows(2))
    batch.pop("rep_mask")
    model.zero_grad()
    model(**batch).loss.backward()  # a plain backward afterwards gets plain gradients
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch.autograd.backward(model(**batch).loss)
    assert all(torch.equal(plain[n], p.grad) for n, p in model.named_parameters() if n in plain)


def test_a_crash_while_saving_keeps_the_previous_save(tmp_path, tok, monkeypatch):
    from reptune.training import mixin

    model = tiny_model(init_lora_weights=False)
    args = make_args(tmp_path / "out", rep_layers=[1], max_steps=1)
    trainer = RepTuneTrainer(
        model,
        args,
        vectors=random_vectors(32, [1]),
        train_dataset=make_rows(4),
        processing_class=tok,
    )
    trainer.save_model()
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    trainer.train()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(mixin, "write_rep_files", crash)
    with pytest.raises(OSError):
        trainer.save_model()
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
