import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune.hooks import (
    AblateVector,
    AddVector,
    CallPositions,
    forward_until,
    intervene,
    recording,
    resolve_positions,
)
from reptune.tokenization import encode_batch


def _call(prompt_end, q=5, past=0, real=None, batch=2):
    real = torch.ones(batch, q, dtype=torch.bool) if real is None else real
    return CallPositions(
        columns=torch.arange(past, past + q),
        real=real,
        prompt_end=torch.full((batch,), prompt_end),
        past_length=past,
    )


def test_position_language_by_hand():
    real = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    call = _call(4, real=real)
    assert resolve_positions("all", call).tolist() == real.tolist()
    assert resolve_positions("prompt", call).tolist() == [
        [False, False, True, True, False],
        [True, True, True, True, False],
    ]
    assert resolve_positions("generated", call)[:, 4].all()
    assert resolve_positions(-1, call).nonzero().tolist() == [[0, 3], [1, 3]]
    # offset before the first real token of row 0 selects nothing there
    assert resolve_positions([-4], call).nonzero().tolist() == [[1, 0]]
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, 6] = True
    mask[0, 2] = True
    decode = _call(4, q=1, past=6)
    assert resolve_positions(mask, decode).tolist() == [[False], [True]]
    assert resolve_positions(mask, _call(4, q=1, past=9)).tolist() == [[False], [False]]
    with pytest.raises(ValueError, match="unknown positions"):
        resolve_positions("middle", call)


def test_decode_step_knows_it_is_generated():
    model, tok = make_model(), make_tokenizer()
    seen = []

    def spy(hidden, mask, call):
        seen.append((call.past_length, mask.clone()))

    batch = encode_batch(tok, ["a b c", "a"])
    with intervene(model, {1: spy}, positions="generated"):
        model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert seen[0][0] == 0 and not seen[0][1].any()  # prefill: prompt only
    assert all(m.all() for past, m in seen[1:]) and [p for p, _ in seen[1:]] == [
        batch["input_ids"].shape[1],
        batch["input_ids"].shape[1] + 1,
    ]


def test_recorder_equals_hidden_states():
    model, tok = make_model(), make_tokenizer()
    batch = encode_batch(tok, ["the quick fox", "dog"])
    rec, fns = recording([0, 2])
    with intervene(model, fns, positions="all"):
        out = model(**batch, output_hidden_states=True)
    for layer in (0, 2):
        torch.testing.assert_close(rec.hidden(layer), out.hidden_states[layer + 1], rtol=0, atol=0)
    assert rec.mask(0).tolist() == batch["attention_mask"].bool().tolist()


def test_forward_until_skips_later_blocks_and_head():
    model, tok = make_model(n_layers=4), make_tokenizer()
    ran = []
    for i, block in enumerate(model.model.layers):
        block.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
    model.lm_head.register_forward_hook(lambda m, a, o: ran.append("head"))
    rec, fns = recording([1])
    forward_until(model, fns, positions=-1, **encode_batch(tok, ["hello world"]))
    assert ran == [0, 1]
    assert rec.per_row_mean(1).shape == (1, 32)


def test_add_and_ablate_by_hand():
    h = torch.randn(2, 3, 4)
    v = torch.tensor([1.0, 2.0, 0.0, -1.0])
    mask = torch.tensor([[True, False, True], [False, False, True]])
    added = AddVector(v, torch.tensor([1.0, -2.0]))(h, mask, None)
    expected = h.clone()
    expected[0, 0] += v
    expected[0, 2] += v
    expected[1, 2] -= 2 * v
    torch.testing.assert_close(added, expected)
    ablated = AblateVector(v)(h, mask, None)
    unit = v / v.norm()
    assert torch.allclose(ablated[mask] @ unit, torch.zeros(3), atol=1e-6)
    assert torch.equal(ablated[~mask], h[~mask])


def test_exception_inside_context_leaves_no_hooks():
    model, tok = make_model(), make_tokenizer()
    batch = encode_batch(tok, ["hello"])
    before = model(**batch).logits
    blocks = list(model.model.layers)
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(model, {1: AddVector(torch.ones(32), 5.0)}):
            raise RuntimeError("boom")

    def explode(hidden, mask, call):
        raise KeyError("inside")

    with pytest.raises(KeyError):
        with intervene(model, {2: explode}):
            model(**batch)
    assert all(not b._forward_hooks for b in blocks)
    assert not model.model._forward_pre_hooks
    assert torch.equal(model(**batch).logits, before)
