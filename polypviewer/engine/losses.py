"""Segmentation losses of the papers, on LOGITS ``(N, 1, H, W)`` and masks in [0, 1].

* ``structure`` - PraNet's structure loss, weighted BCE + weighted IoU with the weight
  ``1 + 5 |avgpool31(mask) - mask|`` (boundary pixels count up to 6x). This is the
  corrected variant: the BCE is really per-pixel weighted (``reduction='none'``). DEFAULT
  for the PraNet recipes.
* ``structure_faithful`` - PraNet's loss exactly as its reference code behaves: the
  reference passes the legacy ``reduce='none'`` argument, which is truthy, so
  ``binary_cross_entropy_with_logits`` returns the mean (unweighted) BCE, a scalar, and the
  weighted average of a scalar is the scalar itself. Only the IoU term is weighted.
* ``dice`` - ResUNet++'s Dice loss ``1 - (2I + 1) / (sum p + sum g + 1)``, over the whole
  batch flattened (Keras ``dice_coef`` flattens the batch).
* ``miou`` - the MediaEval 2020 seed paper's ``1 - (I + 1) / (U + 1)``, batch flattened.
* ``bce_dice`` - mean BCE + ``dice``.

A network returning several maps (deep supervision) gets the same loss on every map,
summed, as PraNet does: :func:`deep_supervision`. Losses compute in float32 even under
bf16 autocast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "structure_loss", "structure_loss_faithful", "dice_loss", "miou_loss",
           "bce_dice_loss", "deep_supervision", "get_loss", "boundary_weight"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def boundary_weight(mask: torch.Tensor) -> torch.Tensor:
    """PraNet's pixel weight ``1 + 5 |avgpool31(mask) - mask|`` (zero padding counted)."""
    return 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)


def _weighted_iou(prob: torch.Tensor, mask: torch.Tensor, weit: torch.Tensor) -> torch.Tensor:
    inter = (prob * mask * weit).sum(dim=(2, 3))
    union = ((prob + mask) * weit).sum(dim=(2, 3))
    return 1 - (inter + 1) / (union - inter + 1)  # (N, 1)


def structure_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PraNet's structure loss with a truly weighted BCE (the corrected variant)."""
    logits, mask = logits.float(), mask.float()
    weit = boundary_weight(mask)
    wbce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    return (wbce + _weighted_iou(torch.sigmoid(logits), mask, weit)).mean()


def structure_loss_faithful(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PraNet's structure loss as the reference computes it: unweighted mean BCE + weighted IoU."""
    logits, mask = logits.float(), mask.float()
    weit = boundary_weight(mask)
    # What ``reduce='none'`` yields in the reference: one mean over the whole batch.
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="mean")
    return (bce + _weighted_iou(torch.sigmoid(logits), mask, weit)).mean()


def _flat_intersection(logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    prob = torch.sigmoid(logits.float()).reshape(-1)
    gt = mask.float().reshape(-1)
    return (prob * gt).sum(), prob.sum(), gt.sum()


def dice_loss(logits: torch.Tensor, mask: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - (2I + s) / (sum p + sum g + s)`` over the flattened batch (ResUNet++)."""
    inter, sp, sg = _flat_intersection(logits, mask)
    return 1 - (2 * inter + smooth) / (sp + sg + smooth)


def miou_loss(logits: torch.Tensor, mask: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - (I + s) / (U + s)`` with ``U = sum p + sum g - I`` (the seed paper's mIoU loss)."""
    inter, sp, sg = _flat_intersection(logits, mask)
    return 1 - (inter + smooth) / (sp + sg - inter + smooth)


def bce_dice_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), mask.float()) + dice_loss(logits, mask)


LOSSES: dict[str, LossFn] = {
    "structure": structure_loss,
    "structure_faithful": structure_loss_faithful,
    "dice": dice_loss,
    "miou": miou_loss,
    "bce_dice": bce_dice_loss,
}


def get_loss(name: str) -> LossFn:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}") from None


def deep_supervision(loss: LossFn, outputs: torch.Tensor | Sequence[torch.Tensor],
                     mask: torch.Tensor) -> torch.Tensor:
    """The loss on one map, or summed over every map of a deep-supervision tuple (PraNet).

    A map smaller than the mask (a network that returns coarse maps) is upsampled first.
    """
    maps = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    total = torch.zeros((), device=mask.device)
    for m in maps:
        if m.shape[-2:] != mask.shape[-2:]:
            m = F.interpolate(m, size=mask.shape[-2:], mode="bilinear", align_corners=False)
        total = total + loss(m, mask)
    return total
