"""Property: a steered batch equals its rows steered one at a time, or is refused before running.

Random position specs (names, offsets, boolean masks of right and wrong shapes), padding sides,
batch compositions (row lengths), coefficient shapes (scalar, one per row, wrong length) and
modes. Tolerance: 1e-5 on the logits of real tokens (float32; padding changes the reduction
order of the attention, nothing else).
"""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import make_model, make_tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reptune.steering import SteeredModel
from reptune.tokenization import encode_batch
from reptune.vectors import SteeringVectors

TOLERANCE = 1e-5
TEXTS = [
    "yes",
    "I love",
    "the lazy dog",
    "Answer: (A",
    "a wonderful happy day",
    "the quick brown fox jumps over",
    "Question: Is the following claim true or false?",
]
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays deterministic
    suppress_health_check=[HealthCheck.too_slow],
)


@functools.cache
def _setup():
    model, tok = make_model(n_layers=2), make_tokenizer()
    g = torch.Generator().manual_seed(0)
    vectors = SteeringVectors({0: torch.randn(32, generator=g), 1: torch.randn(32, generator=g)})
    calls = {"blocks": 0, "model": 0}
    model.register_forward_pre_hook(lambda *a: calls.__setitem__("model", calls["model"] + 1))
    for block in model.model.layers:
        block.register_forward_pre_hook(lambda *a: calls.__setitem__("blocks", calls["blocks"] + 1))
    return model, tok, vectors, calls


@st.composite
def cases(draw):
    texts = draw(st.lists(st.sampled_from(TEXTS), min_size=1, max_size=4))
    with_mask = draw(st.booleans())
    # Without a mask only right padding (lm-eval's layout) leaves the real tokens' outputs intact.
    side = draw(st.sampled_from(["left", "right"])) if with_mask else "right"
    kind = draw(st.sampled_from(["name", "offset", "offsets", "mask1d", "mask2d", "badmask"]))
    coef_kind = draw(st.sampled_from(["scalar", "per_row", "wrong"]))
    return {
        "texts": texts,
        "with_mask": with_mask,
        "side": side,
        "kind": kind,
        "name": draw(st.sampled_from(["all", "prompt", "generated"])),
        "offsets": draw(st.lists(st.integers(-8, 1), min_size=1, max_size=3)),
        "coef_kind": coef_kind,
        "coefs": draw(st.lists(st.floats(-8, 8, width=32), min_size=6, max_size=6)),
        "mode": draw(st.sampled_from(["add", "add", "ablate"])),
        "seed": draw(st.integers(0, 2**16)),
        "bad_rows": draw(st.booleans()),
    }


def _positions(case, batch_size, width):
    g = torch.Generator().manual_seed(case["seed"])
    kind = case["kind"]
    if kind == "name":
        return case["name"]
    if kind == "offset":
        return case["offsets"][0]
    if kind == "offsets":
        return case["offsets"]
    if kind == "mask1d":
        return torch.rand(width, generator=g) < 0.5
    if kind == "mask2d":
        return torch.rand(batch_size, width, generator=g) < 0.5
    # A mask of the wrong shape: other rows, or other columns.
    if case["bad_rows"]:
        return torch.rand(batch_size + 1, width, generator=g) < 0.5
    return torch.rand(batch_size, width + 1, generator=g) < 0.5


def _coefficient(case, batch_size):
    if case["coef_kind"] == "scalar":
        return float(case["coefs"][0])
    n = batch_size if case["coef_kind"] == "per_row" else batch_size + 1
    return torch.tensor(case["coefs"][:n])


def _row_positions(positions, row, start, length):
    """The row's own spec when it runs alone: masks cut to its columns."""
    if not isinstance(positions, torch.Tensor):
        return positions
    mask = positions if positions.dim() == 1 else positions[row]
    return mask[start : start + length]


def _offsets(positions) -> bool:
    return isinstance(positions, (int, list))


def _must_refuse(case, positions, coefficient, batch_size, width) -> bool:
    if isinstance(coefficient, torch.Tensor) and coefficient.numel() not in (1, batch_size):
        return True
    if _offsets(positions) and batch_size > 1 and not case["with_mask"]:
        return True
    if isinstance(positions, torch.Tensor):
        rows_ok = positions.dim() == 1 or positions.shape[0] in (1, batch_size)
        return not rows_ok or positions.shape[-1] != width
    return False


@SETTINGS
@given(case=cases())
def test_batched_steering_equals_rows_alone_or_is_refused_before_running(case):
    model, tok, vectors, calls = _setup()
    batch = encode_batch(tok, case["texts"], padding_side=case["side"], position_ids=True)
    if not case["with_mask"]:
        batch = {"input_ids": batch["input_ids"]}  # right padding: default positions are right
    batch_size, width = batch["input_ids"].shape
    positions = _positions(case, batch_size, width)
    coefficient = _coefficient(case, batch_size)
    steered = SteeredModel(
        model, vectors, positions=positions, mode=case["mode"], coefficient_unit="raw"
    )
    calls.update(blocks=0, model=0)
    if _must_refuse(case, positions, coefficient, batch_size, width):
        with pytest.raises(ValueError):
            steered(**batch, coefficient=coefficient)
        assert calls == {"blocks": 0, "model": 0}, "refused after the forward pass started"
        return
    with torch.no_grad():
        logits = steered(**batch, coefficient=coefficient).logits
        for row, text in enumerate(case["texts"]):
            alone = encode_batch(tok, [text], position_ids=True)
            length = alone["input_ids"].shape[1]
            start = width - length if case["side"] == "left" else 0
            one = SteeredModel(
                model,
                vectors,
                positions=_row_positions(positions, row, start, length),
                mode=case["mode"],
                coefficient_unit="raw",
            )
            coef = coefficient if isinstance(coefficient, float) else float(coefficient[row])
            expected = one(**alone, coefficient=coef).logits[0]
            got = logits[row, start : start + length]
            assert (got - expected).abs().max() <= TOLERANCE, (row, text)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    texts=st.lists(st.sampled_from(TEXTS), min_size=2, max_size=3),
    positions=st.one_of(
        st.sampled_from(["all", "prompt", "generated"]),
        st.lists(st.integers(-4, 2), min_size=1, max_size=2),
    ),
    per_row=st.booleans(),
)
def test_batched_generation_equals_rows_alone(texts, positions, per_row):
    """With the KV cache, offsets >= 0 reach generated tokens: each row as it runs alone."""
    model, tok, vectors, _ = _setup()
    coefs = torch.linspace(-6, 6, len(texts)) if per_row else torch.tensor(4.0)
    steered = SteeredModel(model, vectors, positions=positions, coefficient_unit="raw")
    kwargs = dict(max_new_tokens=3, do_sample=False, output_scores=True)
    kwargs.update(return_dict_in_generate=True)
    batched = steered.generate(**encode_batch(tok, texts), coefficient=coefs, **kwargs)
    for row, text in enumerate(texts):
        coef = float(coefs[row]) if per_row else 4.0
        alone = steered.generate(**encode_batch(tok, [text]), coefficient=coef, **kwargs)
        new = alone.sequences[0, -3:]
        for step, (sb, sa) in enumerate(zip(batched.scores, alone.scores)):
            assert (sb[row] - sa[0]).abs().max() <= 1e-4, (row, step)
            if batched.sequences[row, -3 + step] != new[step]:
                break  # a near tie decided differently: later steps see other tokens
