"""Augmentation keeps image and mask aligned; the plain path is inference's square resize."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from polypviewer.engine.augment import (
    AugmentConfig,
    affine_matrix,
    augment_pair,
    colour_jitter,
    multiscale,
    scaled_size,
)


def _blob_pair(h: int = 90, w: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image whose red channel IS the mask (255 inside an off-centre ellipse), so any
    misalignment between the warped image and the warped mask shows up."""
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (40, 30), (25, 14), 20, 0, 360, 1, -1)
    cv2.rectangle(mask, (80, 55), (110, 80), 1, -1)
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    img[..., 0] = mask * 255
    return img, mask


@pytest.mark.parametrize("seed", range(6))
def test_random_augmentation_keeps_image_and_mask_aligned(seed: int) -> None:
    img, mask = _blob_pair()
    cfg = AugmentConfig(hflip=0.5, vflip=0.5, rotate=30, border_crop=0.15, scale=(0.8, 1.2))
    out_img, out_mask = augment_pair(img, mask, 64, np.random.default_rng(seed), cfg)
    assert out_img.shape == (64, 64, 3) and out_img.dtype == np.uint8
    assert out_mask.shape == (64, 64) and set(np.unique(out_mask)) <= {0, 1}
    assert out_mask.sum() > 50  # the objects stay in view
    red_says = out_img[..., 0] > 127
    # Only pixels on an object's edge may disagree (bilinear vs nearest sampling).
    edge = cv2.dilate(out_mask, np.ones((3, 3), np.uint8)) != cv2.erode(out_mask, np.ones((3, 3), np.uint8))
    disagree = (red_says != out_mask.astype(bool)) & ~edge
    assert disagree.sum() == 0


def test_disabled_augmentation_is_the_inference_resize() -> None:
    img, mask = _blob_pair()
    out_img, out_mask = augment_pair(img, mask, 64, np.random.default_rng(0), AugmentConfig.none())
    ref = cv2.resize(img, (64, 64), interpolation=cv2.INTER_LINEAR)
    diff = np.abs(out_img.astype(int) - ref.astype(int))
    # warpAffine and resize round their fixed-point weights differently: a few grey levels.
    assert diff.max() <= 6 and diff.mean() < 0.5
    ref_mask = cv2.resize(mask, (64, 64), interpolation=cv2.INTER_NEAREST)
    # cv2's nearest resize samples at pixel corners, ours at centres: edges may move by one.
    edge = cv2.dilate(ref_mask, np.ones((3, 3), np.uint8)) != cv2.erode(ref_mask, np.ones((3, 3), np.uint8))
    assert ((out_mask != ref_mask) & ~edge).sum() == 0


def test_affine_matrix_flip_and_identity() -> None:
    m = affine_matrix((10, 20), 10)  # 20x10 source onto 10x10: x scales by 2, y by 1
    assert np.allclose(m @ [0, 0, 1], [0.5, 0])  # first output pixel centre
    assert np.allclose(m @ [9, 9, 1], [18.5, 9])
    flip = affine_matrix((10, 10), 10, hflip=True)
    assert np.allclose(flip @ [0, 3, 1], [9, 3])
    img, mask = _blob_pair(64, 64)
    cfg = AugmentConfig(hflip=1.0, vflip=0.0, rotate=0, border_crop=0, scale=(1, 1),
                        brightness=0, contrast=0, saturation=0)
    out_img, out_mask = augment_pair(img, mask, 64, np.random.default_rng(0), cfg)
    assert np.array_equal(out_img, img[:, ::-1])
    assert np.array_equal(out_mask, mask[:, ::-1])


def test_same_seed_same_sample() -> None:
    img, mask = _blob_pair()
    a = augment_pair(img, mask, 48, np.random.default_rng(7))
    b = augment_pair(img, mask, 48, np.random.default_rng(7))
    c = augment_pair(img, mask, 48, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_colour_jitter_changes_colour_not_geometry() -> None:
    img, _ = _blob_pair()
    out = colour_jitter(img, np.random.default_rng(1), 0.2, 0.2, 0.2)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img)
    assert np.array_equal(out[..., 0] > 127, img[..., 0] > 127)


def test_pranet_multiscale_sizes_and_alignment() -> None:
    assert [scaled_size(352, r) for r in (0.75, 1, 1.25)] == [256, 352, 448]  # PraNet's sizes
    x = torch.zeros(2, 3, 64, 64)
    y = torch.zeros(2, 1, 64, 64)
    x[:, 0, 10:30, 20:50] = 1
    y[:, :, 10:30, 20:50] = 1
    xs, ys = multiscale(x, y, 0.75)
    assert xs.shape == (2, 3, 64, 64)  # 48 rounds to the nearest multiple of 32
    assert torch.allclose(xs[:, :1], ys)  # image and mask are resized alike
    assert multiscale(x, y, 1.0)[0] is x
