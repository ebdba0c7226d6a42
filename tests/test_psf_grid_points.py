"""PSFGrid from picked stars, from PSF stacks, its mosaic; MotionField constant and linear fields."""
import numpy as np
import pytest
import torch

from deblur_ops.psf import MotionField, PSFGrid, linear_motion_kernel, psf_grid_from_points


def _gaussian(size, sigma, dy=0.0, dx=0.0):
    r = size // 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    g = np.exp(-((yy - dy) ** 2 + (xx - dx) ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _star_field(sigmas, positions, shape=(120, 160), sky=50.0, noise=0.0, flux=5e4, seed=0):
    image = np.full(shape, sky) + np.random.default_rng(seed).normal(0, noise, shape) if noise else np.full(shape, sky)
    for sigma, (y, x) in zip(sigmas, positions):
        image[y - 12:y + 13, x - 12:x + 13] += flux * _gaussian(25, sigma)
    return image


def test_stars_recover_their_gaussians_on_each_node():
    # 2 x 2 grid: nodes at (0, 0), (0, 159), (119, 0), (119, 159); stars near them, two for node (1, 1).
    # The 21-pixel crops reach 3.3 sigma of the widest star, so its border is sky.
    positions = [(20, 25), (22, 130), (95, 30), (100, 135), (75, 140)]
    sigmas = [1.2, 1.8, 2.4, 3.0, 3.0]
    image = _star_field(sigmas, positions, noise=1.0)
    grid = psf_grid_from_points(image, np.array(positions, float), 21, (2, 2))
    assert grid.grid_shape == (2, 2) and tuple(grid.psfs.shape[2:]) == (21, 21)
    for (i, j), sigma in zip([(0, 0), (0, 1), (1, 0), (1, 1)], [1.2, 1.8, 2.4, 3.0]):
        expected = _gaussian(21, sigma)
        expected /= expected.sum()
        measured = grid.psfs[i, j].numpy()
        assert abs(measured.sum() - 1) < 1e-9
        # Peak within 3 % of the truth; sky noise (sigma 1 against 5e4 counts) and the clipped
        # background set the residual.
        assert np.abs(measured - expected).max() < 0.03 * expected.max(), (i, j)


def test_off_centre_clicks_are_recentred():
    image = _star_field([2.0], [(40, 40)], shape=(80, 80))
    grid = psf_grid_from_points(image, [(43.4, 37.6)], 17, (1, 1))
    np.testing.assert_allclose(grid.psfs[0, 0].numpy(), _gaussian(17, 2.0), atol=1e-3)  # peak 0.040


@pytest.mark.parametrize("points, size, grid_shape, message", [
    ([(3, 40)], 11, (1, 1), "leaves the"),
    ([(40, 40)], 10, (1, 1), "odd integer"),
    ([(40, 40, 1)], 11, (1, 1), "shape (n, 2)"),
    ([(40, 40)], 11, "3x3", "grid_shape"),
    ("centre", 11, (1, 1), "(n, 2) numbers"),
    ([(40, 40)], 11, (0, 1), "grid_shape must be positive"),
])
def test_points_validation(points, size, grid_shape, message):
    image = _star_field([2.0], [(40, 40)], shape=(80, 80))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        psf_grid_from_points(image, points, size, grid_shape)


def test_empty_crop_is_rejected():
    with pytest.raises(ValueError, match="nothing above its background"):
        psf_grid_from_points(np.ones((40, 40)), [(20, 20)], 9, (1, 1))


def test_stack_and_mosaic():
    psfs = np.random.default_rng(0).random((6, 5, 7)) + 0.1
    grid = PSFGrid.from_stack(psfs, (2, 3))
    np.testing.assert_array_equal(grid.psfs[1, 2].numpy(), psfs[5])
    assert PSFGrid.from_stack(psfs.reshape(2, 3, 5, 7)).grid_shape == (2, 3)
    with pytest.raises(ValueError, match="holds 4 PSFs but the stack has 6"):
        PSFGrid.from_stack(psfs, (2, 2))
    mosaic = grid.mosaic(gap=2)
    assert mosaic.shape == (2 * 5 + 2, 3 * 7 + 4)
    np.testing.assert_allclose(mosaic[7:12, 18:25], psfs[5] / psfs[5].max(), rtol=1e-6)
    assert mosaic[5:7].max() == 0


def test_constant_and_linear_motion_fields():
    constant = MotionField.constant((8, 10), 7.0, 45.0)
    assert torch.all(constant.length == 7) and torch.all(constant.angle == 45)
    ramp = MotionField.linear((5, 9), (3.0, 0.0), (11.0, 80.0), axis="x")
    np.testing.assert_allclose(ramp.length[2].numpy(), np.linspace(3, 11, 9))
    np.testing.assert_allclose(ramp.angle[4].numpy(), np.linspace(0, 80, 9))
    down = MotionField.linear((5, 9), (3.0, 0.0), (11.0, 80.0), axis="y")
    np.testing.assert_allclose(down.length[:, 0].numpy(), np.linspace(3, 11, 5))
    assert torch.all(down.length[:, 0:1] == down.length)
    with pytest.raises(ValueError, match="axis must be"):
        MotionField.linear((5, 9), (3, 0), (5, 0), axis="z")
    with pytest.raises(ValueError, match=">= 1 pixel"):
        MotionField.constant((5, 9), 0.5, 0)


def test_motion_field_preview_grid_samples_the_ramp():
    field = MotionField.linear((9, 21), (3.0, 0.0), (7.0, 90.0), axis="x")
    grid = field.psf_grid((1, 3))
    for j, (length, angle) in enumerate([(3.0, 0.0), (5.0, 45.0), (7.0, 90.0)]):
        np.testing.assert_allclose(grid.psfs[0, j].numpy(), linear_motion_kernel(length, angle, 7).numpy(), atol=1e-7)
