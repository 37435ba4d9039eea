"""The unmasked add for calls that select every token: bit-identical to the masked add, taken
exactly where it applies, and its cached product never goes stale."""

import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune import hooks
from reptune.hooks import AddVector, intervene
from reptune.steering import SteeredModel
from reptune.tokenization import encode_batch
from reptune.vectors import SteeringVectors

LAYERS = (0, 1, 3)
NEW_TOKENS = 4
SAME_LENGTH = ["I love this happy", "I hate this sad", "I love this happy"]
MIXED_LENGTH = ["the quick brown fox jumps", "I love", "Question: is it true?"]


def _steered(coefficient):
    g = torch.Generator().manual_seed(3)
    vectors = SteeringVectors({layer: torch.randn(32, generator=g) for layer in LAYERS})
    model = make_model()
    return SteeredModel(
        model, vectors, coefficient=coefficient, positions="all", coefficient_unit="raw"
    )


def _generate(steered, batch, fast: bool, monkeypatch) -> tuple[torch.Tensor, int]:
    """Greedy generate with KV cache; its per-step logits and the number of fast calls."""
    made = []
    build = steered.interventions

    def spy(coefficient=None):
        fns = build(coefficient)
        made.extend(fns.values())
        return fns

    monkeypatch.setattr(steered, "interventions", spy)
    monkeypatch.setattr(AddVector, "fast_path", fast)
    out = steered.generate(
        **batch,
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        use_cache=True,
        output_logits=True,
        return_dict_in_generate=True,
    )
    assert len(made) == len(LAYERS)
    return torch.stack(out.logits), sum(fn.fast_calls for fn in made)


@pytest.mark.parametrize(
    "coefficient", [3.0, torch.tensor([2.0, -1.5, 4.0])], ids=["scalar", "per_row"]
)
@pytest.mark.parametrize("prompts", [SAME_LENGTH, MIXED_LENGTH], ids=["unpadded", "left_padded"])
def test_fast_path_logits_equal_the_general_path(coefficient, prompts, monkeypatch):
    tok = make_tokenizer()
    batch = encode_batch(tok, prompts)
    padded = not bool(batch["attention_mask"].all())
    assert padded == (prompts is MIXED_LENGTH)
    steered = _steered(coefficient)
    fast, fast_calls = _generate(steered, batch, True, monkeypatch)
    general, general_calls = _generate(steered, batch, False, monkeypatch)
    assert torch.equal(fast, general)
    assert general_calls == 0
    # Every forward call of an unpadded batch selects every token; a padded prompt's call does
    # not, its decode steps do.
    steps = NEW_TOKENS if not padded else NEW_TOKENS - 1
    assert fast_calls == len(LAYERS) * steps
    plain = torch.stack(
        steered.model.generate(
            **batch,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        ).logits
    )
    assert not torch.equal(fast, plain)  # the steering did something


def test_fast_path_is_not_taken_for_other_positions():
    call = hooks.CallPositions(
        columns=torch.arange(4, 5),
        real=torch.ones(2, 1, dtype=torch.bool),
        prompt_end=torch.tensor([4, 4]),
        past_length=4,
    )
    generated = call.select("generated")
    assert generated.all()
    add = AddVector(torch.ones(3), 2.0)
    add(torch.zeros(2, 1, 3), generated, call)
    assert add.fast_calls == 0
    out = add(torch.zeros(2, 1, 3), call.select("all"), call)
    assert add.fast_calls == 1 and call.all_real is True
    assert torch.equal(out, torch.full((2, 1, 3), 2.0))
    padded = hooks.CallPositions(
        columns=torch.arange(0, 2),
        real=torch.tensor([[False, True], [True, True]]),
        prompt_end=torch.tensor([2, 2]),
        past_length=0,
    )
    out = add(torch.zeros(2, 2, 3), padded.select("all"), padded)
    assert add.fast_calls == 1 and padded.all_real is False
    assert torch.equal(out[0, 0], torch.zeros(3)) and torch.equal(out[0, 1], torch.full((3,), 2.0))


def test_cached_product_follows_in_place_changes():
    v = torch.tensor([1.0, 2.0])
    coef = torch.tensor([1.0, -1.0])
    add = AddVector(v, coef)
    mask = torch.ones(2, 1, dtype=torch.bool)
    h = torch.zeros(2, 1, 2)
    assert add(h, mask, None).tolist() == [[[1.0, 2.0]], [[-1.0, -2.0]]]
    v.mul_(2)
    coef[1] = 3.0
    assert add(h, mask, None).tolist() == [[[2.0, 4.0]], [[6.0, 12.0]]]
    add.vector = torch.tensor([0.0, 1.0])
    assert add(h, mask, None).tolist() == [[[0.0, 1.0]], [[0.0, 3.0]]]
    add.coefficient = 2.0  # a new float, then another batch size and dtype
    assert add(h, mask, None).tolist() == [[[0.0, 2.0]], [[0.0, 2.0]]]
    add.coefficient = 0.5
    one = torch.zeros(1, 1, 2, dtype=torch.float64)
    out = add(one, mask[:1], None)
    assert out.dtype == torch.float64 and out.tolist() == [[[0.0, 0.5]]]
    add.vector.add_(1.0)  # in place, while the scalar coefficient stays
    assert add(one, mask[:1], None).tolist() == [[[0.5, 1.0]]]


def test_gradient_reaches_the_vector_on_every_call():
    v = torch.tensor([1.0, 2.0], requires_grad=True)
    add = AddVector(v, 3.0)
    mask = torch.ones(1, 2, dtype=torch.bool)
    for _ in range(2):  # a cached product would fail the second backward
        add(torch.zeros(1, 2, 2), mask, None).sum().backward()
    assert v.grad.tolist() == [12.0, 12.0]


def test_prompt_ends_found_once_per_generate(monkeypatch):
    calls = []
    original = hooks.prompt_ends

    def counting(mask, limit):
        calls.append(limit)
        return original(mask, limit)

    monkeypatch.setattr(hooks, "prompt_ends", counting)
    tok = make_tokenizer()
    batch = encode_batch(tok, MIXED_LENGTH)
    steered = _steered(2.0)
    steered.positions = [-1, 1]
    with_cache = steered.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False)
    width = batch["input_ids"].shape[1]
    assert calls == [width]
    # The reused ends give what computing them at every step gives.
    calls.clear()
    without = steered.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=False)
    assert calls == [width] * NEW_TOKENS
    assert torch.equal(with_cache, without)


def test_keyword_and_positional_calls_locate_tokens_alike():
    model, tok = make_model(), make_tokenizer()
    batch = encode_batch(tok, MIXED_LENGTH)
    seen = []

    def note(hidden, mask, call):
        seen.append((call.prompt_end.tolist(), call.real.tolist()))

    with intervene(model, {1: note}, positions="all", prompt_length=batch["input_ids"].shape[1]):
        model.model(batch["input_ids"], batch["attention_mask"])
        model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert seen[0] == seen[1]
    assert seen[0][1] == batch["attention_mask"].bool().tolist()
