"""Motion bank, motion/grid interpolation weights and inverse filters (paper 004 §2.2)."""
import math

import numpy as np
import pytest
import scipy.signal
import torch

import deblur_ops
from deblur_ops import psf


@pytest.fixture(scope="module")
def bank_grid():
    return psf.motion_bank()


def test_motion_bank_has_511_normalised_filters(bank_grid):
    bank, grid = bank_grid
    assert bank.shape == (511, 35, 35) and grid.shape == (511, 2)
    torch.testing.assert_close(bank.double().sum((1, 2)), torch.ones(511, dtype=torch.float64))
    assert grid[0].tolist() == [1.0, 0.0] and int((grid[:, 0] == 1).sum()) == 1
    assert sorted(set(grid[:, 0].tolist())) == list(map(float, range(1, 36, 2)))
    assert sorted(set(grid[1:, 1].tolist())) == list(map(float, range(0, 180, 6)))
    delta = np.zeros((35, 35))
    delta[17, 17] = 1
    np.testing.assert_allclose(bank[0].numpy(), delta, atol=1e-7)
    f = int(((grid[:, 0] == 35) & (grid[:, 1] == 0)).nonzero())
    row = np.zeros((35, 35))
    row[17] = 1 / 35  # the longest horizontal line covers the whole middle row
    np.testing.assert_allclose(bank[f].numpy(), row, atol=1e-7)


def _expected_bilinear(length, angle, grid):
    """Independent per-pixel construction of the 4 nodes and their bilinear weights."""
    lengths = list(range(1, 36, 2))
    angles = list(range(0, 180, 6))
    length = min(max(length, 1), 35)
    li = min(int((length - 1) // 2), len(lengths) - 2)
    tl = (length - lengths[li]) / 2
    theta = angle % 180
    ai = int(theta // 6)
    ta = (theta - 6 * ai) / 6
    out = {}
    for dl, wl in ((0, 1 - tl), (1, tl)):
        for da, wa in ((0, 1 - ta), (1, ta)):
            node_l = lengths[li + dl]
            node_a = angles[(ai + da) % 30] if node_l > 1 else 0
            f = int(((grid[:, 0] == node_l) & (grid[:, 1] == node_a)).nonzero())
            out[f] = out.get(f, 0.0) + wl * wa
    return out


def test_motion_weights_bilinear_matches_independent_construction(bank_grid):
    _, grid = bank_grid
    gen = torch.Generator().manual_seed(0)
    length = torch.rand(2, 5, 7, generator=gen, dtype=torch.float64) * 40
    angle = torch.rand(2, 5, 7, generator=gen, dtype=torch.float64) * 500 - 100
    length[0, 0, 0], angle[0, 0, 0] = 7.0, 177.0  # wraps between 174 and 0
    length[0, 0, 1], angle[0, 0, 1] = 50.0, 12.0  # clamped to the longest length, on a node
    idx, w = psf.motion_weights(length, angle, grid)
    assert idx.shape == w.shape == (2, 4, 5, 7)
    torch.testing.assert_close(w.sum(1), torch.ones(2, 5, 7, dtype=torch.float64))
    for b in range(2):
        for i in range(5):
            for j in range(7):
                got = {}
                for f, v in zip(idx[b, :, i, j].tolist(), w[b, :, i, j].tolist()):
                    got[f] = got.get(f, 0.0) + v
                want = _expected_bilinear(float(length[b, i, j]), float(angle[b, i, j]), grid)
                for f in set(got) | set(want):
                    assert math.isclose(got.get(f, 0.0), want.get(f, 0.0), abs_tol=1e-12)


def test_motion_weights_softmax_is_differentiable_and_favours_nearest(bank_grid):
    _, grid = bank_grid
    length = torch.tensor([[5.4, 20.2]], dtype=torch.float64, requires_grad=True)
    angle = torch.tensor([[31.0, 100.5]], dtype=torch.float64, requires_grad=True)
    idx, w = psf.motion_weights(length, angle, grid, mode="softmax", temperature=0.5)
    torch.testing.assert_close(w.sum(1), torch.ones(1, 1, 2, dtype=torch.float64))
    nearest = grid[idx[0, w[0, :, 0, 0].argmax(), 0, 0]].tolist()
    assert nearest == [5.0, 30.0]
    d2 = torch.tensor([(0.2 - dl) ** 2 + (1 / 6 - da) ** 2 for dl in (0, 1) for da in (0, 1)],
                      dtype=torch.float64)
    torch.testing.assert_close(w[0, :, 0, 0].detach(), torch.softmax(-d2 / 0.5, 0))
    for mode in ("bilinear", "softmax"):
        assert torch.autograd.gradcheck(
            lambda l, a: psf.motion_weights(l, a, grid, mode=mode)[1], (length, angle))


def test_grid_weights_bilinear_by_position():
    idx, w = psf.grid_weights((3, 4), (9, 13), dtype=torch.float64)
    assert idx.shape == w.shape == (1, 4, 9, 13)
    torch.testing.assert_close(w.sum(1), torch.ones(1, 9, 13, dtype=torch.float64))
    for r, c in ((0, 0), (8, 12), (3, 5), (6, 7)):
        ty, tx = r * 2 / 8, c * 3 / 12
        dense = np.zeros((3, 4))
        for f, v in zip(idx[0, :, r, c].tolist(), w[0, :, r, c].tolist()):
            dense[f // 4, f % 4] += v
        want = np.zeros((3, 4))
        i0, j0 = min(int(ty), 1), min(int(tx), 2)
        fy, fx = ty - i0, tx - j0
        want[i0, j0] += (1 - fy) * (1 - fx)
        want[i0, j0 + 1] += (1 - fy) * fx
        want[i0 + 1, j0] += fy * (1 - fx)
        want[i0 + 1, j0 + 1] += fy * fx
        np.testing.assert_allclose(dense, want, atol=1e-12)


def test_grid_of_identical_psfs_is_a_uniform_blur():
    x = torch.rand(1, 1, 12, 10, dtype=torch.float64)
    k = psf.linear_motion_kernel(5, 30, 7, dtype=torch.float64)
    idx, w = psf.grid_weights((2, 3), (12, 10), dtype=torch.float64)
    y = deblur_ops.nu_conv(x, k.expand(6, 7, 7).contiguous(), idx, w, mode="scatter")
    want = scipy.signal.convolve(x[0, 0].numpy(), k.numpy(), "same")
    np.testing.assert_allclose(y[0, 0].numpy(), want, atol=1e-12)


def _delta_error(d, k):
    c = scipy.signal.convolve(d.numpy(), k.numpy(), "full")
    c[c.shape[0] // 2, c.shape[1] // 2] -= 1
    return float(np.linalg.norm(c))


def test_inverse_filters_invert_the_blur(bank_grid, tmp_path, monkeypatch):
    monkeypatch.setenv("DEBLUR_OPS_CACHE", str(tmp_path))
    bank, grid = bank_grid
    bank = bank.double()
    picks = [int(((grid[:, 0] == l) & (grid[:, 1] == a)).nonzero()) for l, a in ((1, 0), (3, 42),
                                                                                   (7, 90))]
    d = psf.inverse_filters(bank[picks], 31)
    assert d.shape == (3, 31, 31) and len(list(tmp_path.iterdir())) == 1
    torch.testing.assert_close(psf.inverse_filters(bank[picks], 31), d)  # from the cache
    assert _delta_error(d[0], bank[picks[0]]) < 1e-2  # only the weak priors act
    for d_i, f in zip(d[1:], picks[1:]):
        # Regularisation leaves a residual at the blur's spectral zeros, well below no inversion.
        identity = torch.zeros_like(d_i)
        identity[15, 15] = 1
        assert _delta_error(d_i, bank[f]) < 0.7 * _delta_error(identity, bank[f])


def test_inverse_filter_deblurring_raises_psnr(bank_grid):
    skimage_data = pytest.importorskip("skimage.data")
    bank, grid = bank_grid
    img = torch.tensor(skimage_data.camera()[::2, ::2] / 255.0)[None, None]
    H, W = img.shape[-2:]
    idx = torch.zeros(1, 1, H, W, dtype=torch.long)
    w = torch.ones(1, 1, H, W, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)

    def psnr(a):
        return float(10 * torch.log10(1 / ((a - img) ** 2).mean()))

    for length, angle in ((9, 54), (21, 174)):
        f = int(((grid[:, 0] == length) & (grid[:, 1] == angle)).nonzero())
        k = bank[f:f + 1].double()
        blurred = deblur_ops.nu_conv(img, k, idx, w, padding="reflect")
        blurred = blurred + 0.005 * torch.randn(blurred.shape, generator=gen, dtype=torch.float64)
        d = psf.inverse_filters(k, 63, cache=False)
        restored = deblur_ops.nu_conv(blurred, d, idx, w, padding="reflect").clamp(0, 1)
        assert psnr(restored) > psnr(blurred) + 1.5


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="lengths"):
        psf.motion_bank(lengths=[3, 1])
    with pytest.raises(ValueError, match="angles"):
        psf.motion_bank(angles=[0, 180])
    _, grid = psf.motion_bank(lengths=[1, 3], angles=[0, 90], size=5)
    with pytest.raises(ValueError, match="mode"):
        psf.motion_weights(torch.ones(2, 2), torch.ones(2, 2), grid, mode="nearest")
    with pytest.raises(ValueError, match="must match"):
        psf.motion_weights(torch.ones(2, 2), torch.ones(3, 2), grid)
    with pytest.raises(ValueError, match="size must be a positive odd"):
        psf.inverse_filters(torch.ones(1, 3, 3), 8)
    with pytest.raises(ValueError, match="grid_shape"):
        psf.grid_weights((0, 2), (4, 4))
