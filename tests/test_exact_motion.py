"""The exact per-pixel motion blur (data model) against a brute-force rasteriser and the bank model."""
import numpy as np
import pytest
import torch

from deblur_ops.psf import MotionField, exact_motion_blur, line_kernels, linear_motion_kernel


def brute_force(x, length, angle, padding):
    """One linear_motion_kernel per source pixel, added into a padded canvas by hand."""
    H, W = x.shape
    r = int(np.ceil((float(length.max()) - 1) / 2 - 1e-9))
    S = 2 * r + 1
    mode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[padding]
    xp = np.pad(x.numpy(), r, mode=mode)
    lp = np.pad(length.numpy(), r, mode="edge" if padding == "zeros" else mode)
    ap = np.pad(angle.numpy(), r, mode="edge" if padding == "zeros" else mode)
    canvas = np.zeros((H + 4 * r, W + 4 * r))
    for i in range(H + 2 * r):
        for j in range(W + 2 * r):
            k = linear_motion_kernel(float(lp[i, j]), float(ap[i, j]), S, dtype=torch.float64).numpy()
            canvas[i:i + S, j:j + S] += xp[i, j] * k
    return canvas[2 * r:2 * r + H, 2 * r:2 * r + W]


@pytest.mark.parametrize("padding", ["zeros", "reflect", "replicate", "circular"])
def test_matches_brute_force_rasteriser(padding):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(13, 11, dtype=torch.float64, generator=g)
    length = 1 + 6 * torch.rand(13, 11, dtype=torch.float64, generator=g)
    angle = 360 * torch.rand(13, 11, dtype=torch.float64, generator=g) - 90
    got = exact_motion_blur(x, length, angle, padding=padding, rows_per_chunk=4)
    np.testing.assert_allclose(got.numpy(), brute_force(x, length, angle, padding), atol=1e-12)


def test_equals_the_bank_model_on_bank_nodes_and_differs_between_them():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(1, 2, 24, 20, generator=g)
    length = torch.tensor([1.0, 3.0, 5.0, 9.0])[torch.randint(0, 4, (24, 20), generator=g)]
    angle = 6.0 * torch.randint(0, 30, (24, 20), generator=g)
    on_nodes = MotionField(length, angle)
    torch.testing.assert_close(exact_motion_blur(x, length, angle), on_nodes.blur(x), atol=2e-6, rtol=0)
    between = MotionField(length + 1.0, angle + 3.0)  # even lengths, odd angles: off the nodes
    gap = (exact_motion_blur(x, between.length, between.angle) - between.blur(x)).abs().max()
    assert gap > 1e-3


def test_line_kernels_are_the_line_psfs():
    length = torch.tensor([1.0, 2.5, 7.3, 11.0], dtype=torch.float64)
    angle = torch.tensor([0.0, 17.0, 133.0, 90.0], dtype=torch.float64)
    k = line_kernels(length, angle, 11)
    for i in range(4):
        torch.testing.assert_close(k[i], linear_motion_kernel(float(length[i]), float(angle[i]), 11,
                                                               dtype=torch.float64))


def test_flat_image_stays_flat_and_flux_is_kept():
    length, angle = torch.full((16, 16), 7.5), torch.full((16, 16), 40.0)
    torch.testing.assert_close(exact_motion_blur(torch.full((16, 16), 0.3), length, angle),
                               torch.full((16, 16), 0.3))
    x = torch.zeros(16, 16, dtype=torch.float64)
    x[8, 8] = 2.0
    assert float(exact_motion_blur(x, length, angle, padding="zeros").sum()) == pytest.approx(2.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"length": torch.zeros(8, 8)}, "length must be >= 1"),
    ({"length": torch.ones(7, 8)}, "length must have the image's shape"),
    ({"angle": torch.full((8, 8), float("nan"))}, "angle contains NaN"),
    ({"padding": "mirror"}, "padding must be one of"),
    ({"length": torch.full((8, 8), 21.0)}, "reflect padding needs lines shorter"),
])
def test_bad_input_is_named(kwargs, match):
    args = {"image": torch.rand(8, 8), "length": torch.full((8, 8), 3.0), "angle": torch.zeros(8, 8)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        exact_motion_blur(**args)
