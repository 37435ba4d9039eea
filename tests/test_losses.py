import math

import pytest
import torch

from reptune.training.collator import parse_positions, position_mask, prompt_end_from_labels
from reptune.training.losses import (
    cosine_loss,
    cosine_to_vector,
    representation_loss,
    retain_loss,
    steer_loss,
)

S = 1 / math.sqrt(2)
# Two rows of three positions in 2-D; the vector is the x axis.
HIDDEN = torch.tensor(
    [
        [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]],
        [[-3.0, 0.0], [1.0, -1.0], [0.0, 0.0]],
    ]
)
VEC = torch.tensor([2.0, 0.0])
COS = [[1.0, 0.0, S], [-1.0, S, 0.0]]  # the zero row gives cos 0, not NaN
MASK = torch.tensor([[True, True, False], [True, False, True]])


def test_cosine_by_hand():
    torch.testing.assert_close(cosine_to_vector(HIDDEN, VEC), torch.tensor(COS))


@pytest.mark.parametrize(
    "target, per_cos",
    [
        ("toward", lambda c: (1 - c) / 2),
        ("away", lambda c: (1 + c) / 2),
        ("orthogonal", abs),
    ],
)
def test_representation_loss_by_hand(target, per_cos):
    selected = [COS[0][0], COS[0][1], COS[1][0], COS[1][2]]
    # Two layers with the same activations: mean over layers equals the one-layer mean.
    out = representation_loss({3: HIDDEN, 5: HIDDEN}, {3: VEC, 5: VEC}, MASK, target)
    expected = sum(per_cos(c) for c in selected) / 4
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)
    assert out.count.item() == 4
    assert out.stat_sums[3].item() == pytest.approx(sum(selected), abs=1e-6)
    # an explicit normaliser: sum over layers and positions / (layers * N)
    scaled = representation_loss({3: HIDDEN}, {3: VEC}, MASK, target, num_positions=10)
    assert scaled.loss.item() == pytest.approx(sum(per_cos(c) for c in selected) / 10, abs=1e-6)


def test_cosine_loss_targets_and_bounds():
    cos = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
    torch.testing.assert_close(cosine_loss(cos, "toward"), torch.tensor([1, 0.75, 0.5, 0.25, 0]))
    torch.testing.assert_close(cosine_loss(cos, "away"), torch.tensor([0, 0.25, 0.5, 0.75, 1]))
    torch.testing.assert_close(cosine_loss(cos, "orthogonal"), torch.tensor([1, 0.5, 0, 0.5, 1]))
    with pytest.raises(ValueError, match="unknown rep_target"):
        cosine_loss(cos, "sideways")


def test_layers_are_averaged_and_vectors_per_layer():
    other = torch.tensor([0.0, 1.0])
    out = representation_loss({1: HIDDEN, 2: HIDDEN}, {1: VEC, 2: other}, MASK, "toward")
    cos_y = cosine_to_vector(HIDDEN, other)[MASK]
    cos_x = torch.tensor(COS)[MASK]
    expected = (((1 - cos_x) / 2).sum() + ((1 - cos_y) / 2).sum()) / (2 * 4)
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError, match="no vector for layers"):
        representation_loss({7: HIDDEN}, {1: VEC}, MASK)


def test_representation_loss_gradient_and_dtype():
    h = HIDDEN.clone().to(torch.bfloat16).requires_grad_(True)
    out = representation_loss({0: h}, {0: VEC}, MASK, "toward")
    assert out.loss.dtype == torch.float32  # computed in float32 whatever the model's dtype
    out.loss.backward()
    assert h.grad is not None and h.grad.dtype == torch.bfloat16
    assert (h.grad[~MASK] == 0).all()  # unselected positions get no gradient
    assert torch.isfinite(h.grad.float()).all()


def test_retain_loss_by_hand():
    ref = torch.zeros_like(HIDDEN)
    out = retain_loss({0: HIDDEN}, {0: ref}, MASK)
    norms = [1.0, 2.0, 3.0, 0.0]  # |h - 0| at the four selected positions
    assert out.loss.item() == pytest.approx(sum(norms) / 4, abs=1e-6)
    assert retain_loss({0: HIDDEN}, {0: HIDDEN.clone()}).loss.item() == 0.0
    # gradient at h == h_ref is zero, not NaN (first LoRA step)
    h = HIDDEN.clone().requires_grad_(True)
    retain_loss({0: h}, {0: HIDDEN.clone()}).loss.backward()
    assert torch.equal(h.grad, torch.zeros_like(h))
    # reference carries no gradient even if given with one
    ref = HIDDEN.clone().requires_grad_(True)
    tuned = (HIDDEN * 2).requires_grad_(True)
    retain_loss({0: tuned}, {0: ref}).loss.backward()
    assert ref.grad is None and tuned.grad is not None


def test_empty_selection_is_zero_not_nan():
    none = torch.zeros_like(MASK)
    out = representation_loss({0: HIDDEN}, {0: VEC}, none)
    assert out.loss.item() == 0.0 and out.count.item() == 0


def test_parse_positions():
    assert parse_positions("-7") == [-7]
    assert parse_positions(" -7,-6 ") == [-7, -6]
    assert parse_positions("[-2, -1]") == [-2, -1]
    assert parse_positions(-1) == [-1]
    assert parse_positions("generated") == "completion"
    for bad in ("middle", [], [1.5], True):
        with pytest.raises(ValueError):
            parse_positions(bad)


def test_position_mask_right_and_left_padding():
    right = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    end = torch.tensor([3, 2])
    assert position_mask(-1, right, end).nonzero().tolist() == [[0, 2], [1, 1]]
    assert position_mask("completion", right, end).nonzero().tolist() == [
        [0, 3],
        [1, 2],
        [1, 3],
        [1, 4],
    ]
    assert position_mask("prompt", right, end).sum().item() == 5
    assert position_mask([-5], right, end).sum().item() == 0  # before the first token
    left = torch.tensor([[0, 1, 1, 1]])
    assert position_mask(-1, left, torch.tensor([3])).nonzero().tolist() == [[0, 2]]
    labels = torch.tensor([[-100, -100, -100, 7, -100], [-100, -100, 5, 6, 7]])
    assert prompt_end_from_labels(labels, right).tolist() == [3, 2]


def test_sparse_gradient_equals_dense():
    """The memory-saving sparse gradient gives the same parameter gradients."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(3, 6, 4)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, 2] = mask[2, 5] = True
    grads = []
    for sparse in (False, True):
        layer.zero_grad()
        h = layer(x)  # a "block output" that the rest of the model also uses
        rest = layer(h).tanh().sum()
        rep = representation_loss({0: h}, {0: torch.ones(4)}, mask, sparse_grad=sparse).loss
        keep = retain_loss({0: h}, {0: x}, mask, sparse_grad=sparse).loss
        (rest + rep + keep).backward()
        grads.append((layer.weight.grad.clone(), layer.bias.grad.clone()))
    for dense, sparse in zip(*grads):
        torch.testing.assert_close(sparse, dense)


def test_steer_loss_by_hand():
    """Relative L2 distance to the target, averaged over selected positions and layers."""
    target = HIDDEN + torch.tensor([0.5, -0.5])  # what a steered model would compute
    tuned = HIDDEN.clone().requires_grad_(True)
    out = steer_loss({3: tuned, 5: target.clone()}, {3: target, 5: target}, MASK)
    # layer 3: |h - t| = |(-0.5, 0.5)| = sqrt(0.5) at every position; layer 5 matches exactly
    norms = target.norm(dim=-1)[MASK]
    by_hand = (math.sqrt(0.5) / norms).sum() / (2 * 4)
    assert out.loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert out.stat_sums[5].item() == 0.0 and out.count.item() == 4
    assert out.stat_sums[3].item() == pytest.approx((math.sqrt(0.5) / norms).sum().item())
    out.loss.backward()
    assert tuned.grad[~MASK].abs().max() == 0  # positions outside the mask get no gradient
    global_norm = steer_loss({3: tuned}, {3: target}, MASK, num_positions=8).loss
    assert global_norm.item() == pytest.approx(2 * by_hand.item() / 2, rel=1e-6)
    with pytest.raises(ValueError, match="no steering target"):
        steer_loss({3: tuned}, {4: target}, MASK)


def test_relative_l2_loss_is_the_steer_loss():
    from reptune.training.losses import relative_l2_loss

    target = HIDDEN + torch.tensor([0.5, -0.5])
    a = relative_l2_loss({3: HIDDEN}, {3: target}, MASK)
    b = steer_loss({3: HIDDEN}, {3: target}, MASK)
    assert a.loss.item() == b.loss.item()
    by_hand = (math.sqrt(0.5) / target.norm(dim=-1)[MASK]).mean()
    assert a.loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    with pytest.raises(ValueError, match="no target activation"):
        relative_l2_loss({3: HIDDEN}, {4: target}, MASK)


def test_reps_preference_loss_by_hand():
    """-log sigmoid(beta+ l+(y_c) - l+(y)) - log sigmoid(beta- l-(y) - l-(y_c)), with
    beta+ = max(log p(y) - log p(y_c), 1) and beta- = max(log p(y_c) - log p(y), 1)."""
    from reptune.training.losses import reps_preference_loss

    def nls(x):  # -log sigmoid(x)
        return math.log1p(math.exp(-x))

    pos_c = torch.tensor([-1.0, -2.0], requires_grad=True)
    pos_y = torch.tensor([-3.0, -1.5])
    neg_y = torch.tensor([-0.5, -2.5])
    neg_c = torch.tensor([-2.0, -0.5])
    ref_c = torch.tensor([-12.0, -4.0])  # summed: the base model finds y_c unlikely in row 0
    ref_y = torch.tensor([-6.0, -7.5])
    out = reps_preference_loss(pos_c, pos_y, neg_y, neg_c, ref_c, ref_y)
    # row 0: beta+ = max(-6 + 12, 1) = 6, beta- = max(-12 + 6, 1) = 1
    row0 = nls(6 * -1.0 - (-3.0)) + nls(1 * -0.5 - (-2.0))
    # row 1: beta+ = max(-7.5 + 4, 1) = 1, beta- = max(-4 + 7.5, 1) = 3.5
    row1 = nls(1 * -2.0 - (-1.5)) + nls(3.5 * -2.5 - (-0.5))
    torch.testing.assert_close(out, torch.tensor([row0, row1]), rtol=1e-6, atol=1e-7)
    out.sum().backward()
    # d/d pos_c of -log sigmoid(6 * pos_c + 3) at pos_c = -1 is -6 * sigmoid(-(6 * -1 + 3))
    assert pos_c.grad[0].item() == pytest.approx(-6 / (1 + math.exp(-3.0)), rel=1e-6)
