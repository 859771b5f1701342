"""visualize: boxes land on the right pixels, PCA recovers planted structure, attention maps."""

from __future__ import annotations

import numpy as np
import pytest

from vit_perception.visualize import attention_map, class_color, draw_detections, pca_preview


def test_boxes_are_drawn_at_their_pixels():
    rgb = np.zeros((120, 160, 3), np.uint8)
    out = draw_detections(rgb, [[40, 50, 100, 110]], [2], [0.87], ["a", "b", "car"])
    assert out is not rgb and not rgb.any()  # a copy; the input is untouched
    color = class_color(2)
    # The four edges carry the class colour; the box interior (away from the label) does not.
    for y, x in [(50, 70), (110, 70), (80, 40), (80, 100)]:
        assert tuple(out[y, x]) == color, (y, x)
    assert not out[70:105, 45:95].any()
    # The label ("car 0.87") sits on a filled patch just above the box.
    assert (out[35:49, 40:60] == color).all(axis=2).sum() > 50
    # Nothing far from the box.
    assert not out[:, 120:].any() and not out[115:].any()


def test_label_inside_when_box_touches_the_top():
    rgb = np.zeros((100, 100, 3), np.uint8)
    out = draw_detections(rgb, [[10, 0, 90, 80]], [0], [0.5], ["x"])
    assert (out[2:14, 12:30] == class_color(0)).all(axis=2).sum() > 20


def test_classes_get_distinct_colours_and_unknown_ids_are_numbered():
    colors = {class_color(i) for i in range(80)}
    assert len(colors) == 80
    rgb = np.zeros((60, 60, 3), np.uint8)
    out = draw_detections(rgb, np.zeros((0, 4)), [], [], [])
    assert not out.any()
    out = draw_detections(rgb, [[5, 20, 50, 50]], [7], [0.9], ["only"])  # id 7 not named
    assert out.any()
    with pytest.raises(ValueError):
        draw_detections(rgb, [[0, 0, 1, 1]], [0, 1], [0.5], [])


def planted_features(rng, c=64, h=12, w=16, noise=0.01):
    """Features with a 3-dim structure: three latent maps with decreasing variance."""
    # Centred, exactly uncorrelated latents, so the principal axes are the latents themselves.
    latents = rng.standard_normal((h * w, 3))
    latents, _ = np.linalg.qr(latents - latents.mean(axis=0))  # columns stay centred
    latents = latents.T * np.array([[5.0], [3.0], [1.5]]) * np.sqrt(h * w)
    loadings, _ = np.linalg.qr(rng.standard_normal((c, 3)))  # orthonormal [C, 3]
    feats = loadings @ latents + 2.0 + noise * rng.standard_normal((c, h * w))
    return feats.reshape(c, h, w).astype(np.float32), latents.reshape(3, h, w)


def test_pca_recovers_planted_components(rng):
    feats, latents = planted_features(rng)
    rgb, basis = pca_preview(feats, 16 * 4, 12 * 4)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    grid = rgb[::4, ::4].astype(np.float64)  # nearest upsampling: one block per patch
    for k in range(3):
        corr = np.corrcoef(grid[..., k].ravel(), latents[k].ravel())[0, 1]
        assert abs(corr) > 0.999, (k, corr)  # channel k = component k, in variance order
        assert grid[..., k].min() == 0 and grid[..., k].max() == 255  # min/max normalised
    assert np.allclose(basis.components @ basis.components.T, np.eye(3), atol=1e-4)


def test_pca_basis_reuse_is_stable(rng):
    feats, _ = planted_features(rng)
    first, basis = pca_preview(feats, 32, 24)
    again, same = pca_preview(feats, 32, 24, basis=basis)
    np.testing.assert_array_equal(first, again)
    assert same is basis
    # A refit on a slightly different frame keeps signs (colours do not flip).
    noisy = feats + 0.01 * rng.standard_normal(feats.shape).astype(np.float32)
    _, refit = pca_preview(noisy, 32, 24)
    assert (np.sum(refit.components * basis.components, axis=1) > 0.99).all()
    # A brighter frame projected with the old basis saturates instead of renormalising.
    bright, _ = pca_preview(feats * 3, 32, 24, basis=basis)
    assert bright.shape == first.shape
    with pytest.raises(ValueError):
        pca_preview(feats[:10], 32, 24, basis=basis)


def test_attention_map(rng):
    att = rng.random((6, 10, 10)).astype(np.float32) * 0.1
    att[:, 2, 7] = 1.0  # every head attends to one patch
    mono = attention_map(att, 100, 100)
    assert mono.shape == (100, 100) and mono.dtype == np.uint8
    assert mono.max() == 255 and mono.min() == 0
    y, x = np.unravel_index(np.argmax(mono), mono.shape)
    assert 20 <= y < 30 and 70 <= x < 80
    assert not attention_map(np.ones((2, 4, 4)), 8, 8).any()  # flat map: no division by zero
