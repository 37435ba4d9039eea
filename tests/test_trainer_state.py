"""State the trainer must not leave behind: the model's mode, gradient-routing hooks.

The model goes back in the mode it came in, and no routing hook acts after ``train()`` returns
or after a step that failed before its backward.
"""

from __future__ import annotations

import torch
from dist.rt_common import make_args, make_rows, make_tokenizer, random_vectors, tiny_model

from reptune.training import RepTuneCollator, RepTuneTrainer

ROUTING = dict(
    rep_layers=[1], train_layers=[1], rep_params=r"self_attn\.(v|o)_proj", lm_params=r"\.mlp\."
)


def _tensor_hooks(model) -> list[str]:
    return [n for n, p in model.named_parameters() if getattr(p, "_backward_hooks", None)]


def _trainer(tmp_path, model, **kwargs):
    rows = make_rows(4)
    args = make_args(tmp_path, max_steps=1, **kwargs)
    return RepTuneTrainer(
        model,
        args,
        vectors=random_vectors(32, [1]),
        train_dataset=rows,
        processing_class=make_tokenizer(),
    )


def test_train_restores_the_models_mode(tmp_path):
    model = tiny_model(lora=False).eval()
    _trainer(tmp_path, model, **ROUTING).train()
    assert not model.training


def test_no_routing_hook_outlives_train(tmp_path):
    model = tiny_model(lora=False)
    _trainer(tmp_path, model, **ROUTING).train()
    assert _tensor_hooks(model) == []


def test_a_failed_step_does_not_change_the_next_plain_backward(tmp_path):
    tok = make_tokenizer()
    batch = RepTuneCollator(tok, "-2")(make_rows(4))
    plain_batch = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}

    def plain_grads(model):
        model.zero_grad()
        model(**plain_batch).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    untouched = tiny_model(lora=False).train()
    _trainer(tmp_path / "a", untouched, **ROUTING)  # the same frozen parameters, no step
    expected = plain_grads(untouched)
    model = tiny_model(lora=False).train()
    trainer = _trainer(tmp_path / "b", model, **ROUTING)
    trainer.compute_loss(model, dict(batch))  # the step fails here: no backward
    got = plain_grads(model)
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name)
