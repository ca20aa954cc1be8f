"""Losses on hand-checked tiny cases, and PraNet's faithful loss against the reference code."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from polypviewer.engine.losses import (
    LOSSES,
    bce_dice_loss,
    boundary_weight,
    deep_supervision,
    dice_loss,
    get_loss,
    miou_loss,
    structure_loss,
    structure_loss_faithful,
)


def reference_structure_loss(pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PraNet's ``structure_loss`` verbatim (DengPingFan/PraNet, MyTrain.py)."""
    weit = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy argument is what we are reproducing
        wbce = F.binary_cross_entropy_with_logits(pred, mask, reduce="none")
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    pred = torch.sigmoid(pred)
    inter = ((pred * mask) * weit).sum(dim=(2, 3))
    union = ((pred + mask) * weit).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()


def _case(seed: int = 0, n: int = 2, s: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 1, s, s, generator=g) * 3
    mask = torch.zeros(n, 1, s, s)
    mask[0, :, 8:30, 5:25] = 1
    mask[-1, :, 20:38, 18:39] = 1
    return logits, mask


def test_faithful_structure_loss_equals_reference_code() -> None:
    for seed in range(3):
        logits, mask = _case(seed)
        assert torch.allclose(structure_loss_faithful(logits, mask), reference_structure_loss(logits, mask),
                              atol=1e-6)


def test_reference_bce_is_the_unweighted_mean() -> None:
    """``reduce='none'`` is truthy: the reference's BCE is one scalar, so its weighting is void."""
    logits, mask = _case()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        legacy = F.binary_cross_entropy_with_logits(logits, mask, reduce="none")
    assert legacy.dim() == 0
    assert torch.allclose(legacy, F.binary_cross_entropy_with_logits(logits, mask))


def test_corrected_loss_weights_the_bce_per_pixel() -> None:
    logits, mask = _case()
    weit = boundary_weight(mask)
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    wbce = ((weit * bce).sum((2, 3)) / weit.sum((2, 3)))
    wiou = structure_loss_faithful(logits, mask) - F.binary_cross_entropy_with_logits(logits, mask)
    assert torch.allclose(structure_loss(logits, mask), wbce.mean() + wiou, atol=1e-6)
    # Boundaries weigh more, so the two variants differ on a mask with edges ...
    assert not torch.allclose(structure_loss(logits, mask), structure_loss_faithful(logits, mask))


def test_structure_loss_hand_case_empty_mask() -> None:
    # Empty mask: weight 1 everywhere, so both variants agree; logits 0 -> p = 0.5.
    logits, mask = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    assert torch.equal(boundary_weight(mask), torch.ones(1, 1, 4, 4))
    expected = math.log(2) + 1 - 1 / (0.5 * 16 + 1)  # BCE log 2; IoU: I = 0, U = 8
    assert structure_loss(logits, mask).item() == pytest.approx(expected, rel=1e-6)
    assert structure_loss_faithful(logits, mask).item() == pytest.approx(expected, rel=1e-6)


def test_boundary_weight_hand_case() -> None:
    mask = torch.zeros(1, 1, 31, 31)
    mask[..., 15, 15] = 1  # the centre window holds 1 pixel of 961
    w = boundary_weight(mask)
    assert w[0, 0, 15, 15].item() == pytest.approx(1 + 5 * (1 - 1 / 961))
    assert w[0, 0, 0, 0].item() == pytest.approx(1 + 5 / 961)


def test_dice_miou_bce_dice_hand_cases() -> None:
    logits = torch.zeros(1, 1, 4, 4)  # p = 0.5 everywhere: sum p = 8
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1  # 4 pixels: I = 2
    assert dice_loss(logits, mask).item() == pytest.approx(1 - 5 / 13)  # 1 - (2*2+1)/(8+4+1)
    assert miou_loss(logits, mask).item() == pytest.approx(1 - 3 / 11)  # 1 - (2+1)/(8+4-2+1)
    assert bce_dice_loss(logits, mask).item() == pytest.approx(math.log(2) + 1 - 5 / 13)


def test_perfect_prediction_scores_near_zero() -> None:
    _, mask = _case()
    logits = (mask * 2 - 1) * 50
    for name in ("dice", "miou"):
        assert get_loss(name)(logits, mask).item() < 1e-3
    assert structure_loss(logits, mask).item() < 1e-3


def test_deep_supervision_sums_maps_and_upsamples() -> None:
    logits, mask = _case()
    one = structure_loss(logits, mask)
    assert torch.allclose(deep_supervision(structure_loss, (logits,) * 4, mask), 4 * one)
    small = logits[..., ::2, ::2]
    got = deep_supervision(dice_loss, small, mask)
    up = F.interpolate(small, size=mask.shape[-2:], mode="bilinear", align_corners=False)
    assert torch.allclose(got, dice_loss(up, mask))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_backpropagates_under_bf16(name: str) -> None:
    logits, mask = _case()
    logits = logits.to(torch.bfloat16).requires_grad_(True)
    loss = get_loss(name)(logits, mask)
    assert loss.dtype == torch.float32
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad.float()).all()


def test_unknown_loss_names_the_choices() -> None:
    with pytest.raises(ValueError, match="structure"):
        get_loss("nope")
