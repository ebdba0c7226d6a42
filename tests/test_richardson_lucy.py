"""Richardson-Lucy with background, stopping rule, memory-bounded splitting, and its spatially
varying form, against scikit-image, scipy convolutions and exact identities."""
import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve
from skimage import restoration

import importlib

import deblur_ops
from deblur_ops.psf import MotionField, PSFGrid
from deblur_ops.boundary import next_fast_len
from deblur_ops.restore import richardson_lucy, sv_richardson_lucy
from deblur_ops.restore.richardson_lucy import estimate_background, work_plan
from deblur_ops.restore.sv_richardson_lucy import SVDomain, choose_operator

rl_module = importlib.import_module("deblur_ops.restore.richardson_lucy")


def gaussian(shape, sigmas, dtype=np.float64):
    """An odd-sized, anisotropic Gaussian PSF summing to 1 (NumPy)."""
    axes = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    psf = np.exp(-sum(a**2 / (2 * s**2) for a, s in zip(axes, sigmas)))
    return (psf / psf.sum()).astype(dtype)


def beads(shape, count, margin, seed=0):
    """Point-like beads (3 px cubes) of random brightness, ``margin`` px away from the borders."""
    rng = np.random.default_rng(seed)
    scene = np.zeros(shape)
    for _ in range(count):
        centre = [rng.integers(margin, n - margin) for n in shape]
        scene[tuple(slice(c - 1, c + 2) for c in centre)] = rng.uniform(20, 100)
    return scene


def blur_full(scene, psf):
    """The blur of a scene that is zero beyond the image, cropped to the image (scipy)."""
    return fftconvolve(scene, psf, mode="same").clip(min=0)


def batch(array):
    return torch.from_numpy(np.ascontiguousarray(array))[None, None]


class TestAgainstSkimage:
    @pytest.mark.parametrize("shape,psf_shape,sigmas", [((40, 36), (7, 5), (1.5, 1.0)),
                                                        ((12, 24, 20), (5, 7, 5), (1.2, 1.5, 1.0))])
    @pytest.mark.parametrize("symmetric", [True, False], ids=["gaussian", "asymmetric"])
    def test_same_iterates_as_skimage_with_zero_boundary(self, shape, psf_shape, sigmas, symmetric):
        rng = np.random.default_rng(1)
        image = rng.random(shape) + 0.05
        # A Gaussian's OTF is real (the real-product path); a random PSF's is not.
        psf = gaussian(psf_shape, sigmas) if symmetric else rng.random(psf_shape)
        theirs = restoration.richardson_lucy(image, psf, num_iter=12, clip=False)
        # skimage: mode="same" convolutions (scene zero outside), start 0.5, no normaliser.
        ours = richardson_lucy(batch(image), torch.from_numpy(psf), iterations=12, padding="zeros",
                               init=0.5)[0, 0].numpy()
        # skimage adds 1e-12 to the prediction; our floor is float64 eps times the data's maximum.
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


class TestFluxAndBackground:
    @pytest.mark.parametrize("shape,psf_shape", [((48, 40), (9, 7)), ((12, 32, 28), (5, 7, 7))])
    def test_circular_keeps_the_flux_of_every_iterate(self, shape, psf_shape):
        rng = np.random.default_rng(2)
        scene = beads(shape, 12, 3)
        observed = rng.poisson(blur_full(scene, gaussian(psf_shape, [1.5] * len(shape))) + 1.0).astype(np.float32)
        psf = torch.from_numpy(gaussian(psf_shape, [1.5] * len(shape), np.float32))
        sums = []
        out = richardson_lucy(batch(observed), psf, iterations=20, padding="circular",
                              callback=lambda i, est: sums.append(float(est.double().sum())))
        total = float(observed.astype(np.float64).sum())
        assert max(abs(s - total) for s in sums) / total < 1e-3
        assert abs(float(out.double().sum()) - total) / total < 1e-3

    @pytest.mark.parametrize("background", [0.0, 2.0])
    def test_extended_boundary_keeps_the_flux_of_objects_inside(self, background):
        # Beads away from the border, noise-free data with a known pedestal: the restored flux is
        # the data's less the background.
        psf = gaussian((11, 11), (2.0, 2.0))
        scene = beads((64, 64), 10, 12, seed=3)
        observed = blur_full(scene, psf) + background
        out = richardson_lucy(batch(observed), torch.from_numpy(psf), iterations=100, background=background)
        expected = float((observed - background).sum())
        assert abs(float(out.sum()) - expected) / expected < 1e-3

    def test_background_model_recovers_what_rl_finds_without_background(self):
        # data = H x + b with b known (a ramp map): RL with the background term and RL on the
        # background-free data approach the same x (the iterates differ: the updates do). After
        # 100 updates they are 4.8 % apart (relative l2); subtracting b after ignoring it is 16 % off.
        psf = gaussian((9, 9), (1.5, 1.5))
        scene = beads((48, 48), 8, 8, seed=4) + 1.0
        clean = blur_full(scene, psf)
        ramp = np.linspace(5, 15, 48)[None, :] * np.ones((48, 1))
        without = richardson_lucy(batch(clean), torch.from_numpy(psf), iterations=100)
        with_b = richardson_lucy(batch(clean + ramp), torch.from_numpy(psf), iterations=100,
                                 background=torch.from_numpy(ramp))
        ignored = richardson_lucy(batch(clean + ramp), torch.from_numpy(psf), iterations=100)
        scale = float(without.norm())
        assert float((with_b - without).norm()) < 0.06 * scale
        assert float((ignored - batch(ramp) - without).norm()) > 0.12 * scale

    def test_auto_background_is_the_pedestal_of_a_star_field(self):
        rng = np.random.default_rng(5)
        field = blur_full(beads((96, 96), 15, 5, seed=5), gaussian((9, 9), (1.5, 1.5)))
        observed = rng.poisson(field + 10.0).astype(np.float32)
        level = float(estimate_background(batch(observed)))
        assert level == pytest.approx(10.0, abs=0.3)
        info = {}
        richardson_lucy(batch(observed), torch.from_numpy(gaussian((9, 9), (1.5, 1.5), np.float32)),
                        iterations=3, background="auto", info=info)
        assert info["iterations"] == 3

    @pytest.mark.parametrize("method", ["richardson_lucy", "sv_richardson_lucy"])
    def test_flat_frame_restores_to_itself(self, method):
        flat = torch.full((1, 1, 40, 44), 7.0, dtype=torch.float64)
        psf = torch.from_numpy(gaussian((9, 7), (2.0, 1.5)))
        blur = psf if method == "richardson_lucy" else PSFGrid(torch.stack([psf * s for s in (1.0, 2.0, 3.0, 4.0)])
                                                               .reshape(2, 2, 9, 7))
        fn = richardson_lucy if method == "richardson_lucy" else sv_richardson_lucy
        torch.testing.assert_close(fn(flat, blur, iterations=10), flat, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(fn(flat, blur, iterations=10, background=3.0), flat - 3.0, rtol=1e-10, atol=1e-10)


class TestStoppingAndCallback:
    def test_tol_stops_at_the_first_small_relative_change(self):
        psf = gaussian((7, 7), (1.5, 1.5))
        observed = blur_full(beads((40, 40), 6, 5, seed=6), psf) + 1.0
        estimates, info = [], {}
        out = richardson_lucy(batch(observed), torch.from_numpy(psf), iterations=500, tol=1e-3, info=info,
                              callback=lambda i, est: estimates.append(est.clone()))
        n = info["iterations"]
        assert 2 < n < 500 and len(estimates) == n
        changes = [float((b - a).norm() / a.norm()) for a, b in zip(estimates, estimates[1:])]
        assert changes[-1] < 1e-3 <= changes[-2]
        assert info["relative_change"] == pytest.approx(changes[-1], rel=1e-6)
        torch.testing.assert_close(out, estimates[-1])

    def test_callback_is_called_once_per_iteration(self):
        calls = []
        image = torch.rand(2, 1, 10, 16, 16) + 0.1
        richardson_lucy(image, torch.ones(3, 3, 3) / 27, iterations=4,
                        callback=lambda i, est: calls.append((i, tuple(est.shape))))
        assert calls == [(i, (2, 1, 10, 16, 16)) for i in range(4)]


class TestErrors:
    @pytest.mark.parametrize("kwargs,match", [
        ({"background": -1.0}, "background must be finite and >= 0"),
        ({"background": torch.ones(5, 7)}, "background map of shape"),
        ({"background": "median"}, "background must be a number"),
        ({"tol": 0.0}, "tol must be a finite number > 0"),
        ({"tol": -1e-3}, "tol must be"),
        ({"info": []}, "info must be a dict"),
        ({"padding": "wrap"}, "padding"),
    ])
    @pytest.mark.parametrize("method", ["richardson_lucy", "sv_richardson_lucy"])
    def test_bad_arguments_are_named(self, kwargs, match, method):
        if method == "sv_richardson_lucy" and "padding" in kwargs:
            kwargs = {"operator": "wrap"}
            match = "operator"
        fn = richardson_lucy if method == "richardson_lucy" else sv_richardson_lucy
        with pytest.raises(ValueError, match=match):
            fn(torch.rand(1, 1, 24, 24), torch.ones(3, 3) / 9, **kwargs)

    def test_sv_rejects_volumes_and_negative_psfs(self):
        with pytest.raises(ValueError, match="takes 2D images"):
            sv_richardson_lucy(torch.rand(1, 1, 4, 24, 24), torch.ones(3, 3) / 9)
        psfs = torch.ones(2, 2, 3, 3)
        psfs[0, 0, 0, 0] = -1
        with pytest.raises(ValueError, match="negative values"):
            sv_richardson_lucy(torch.rand(1, 1, 24, 24), PSFGrid(psfs))


class TestMemory:
    def test_plan_splits_items_then_tiles(self):
        shape, ksize = (4, 2, 64, 64), (7, 7)
        side = next_fast_len(64 + 7 - 1)
        one = 7 * 4 * side * side  # ARRAYS_PER_ITEM float32 arrays on the extended grid
        assert work_plan(shape, ksize, "extended", 4, 8 * one, 7) == (8, None)
        assert work_plan(shape, ksize, "extended", 4, 3 * one, 7) == (3, None)
        # Tiles of 32 plus halos of 2 x 7 would need the whole 64 x 64 grid again; 16 fit.
        assert work_plan(shape, ksize, "extended", 4, one // 2, 7) == (1, 16)
        with pytest.raises(MemoryError, match="smallest tile"):
            work_plan(shape, ksize, "extended", 4, 1000, 7)

    def test_split_runs_match_the_whole_run(self, monkeypatch):
        rng = np.random.default_rng(7)
        image = torch.from_numpy(rng.random((2, 2, 64, 64)) + 0.2)
        psfs = torch.from_numpy(np.stack([gaussian((7, 7), (s, s)) for s in (1.0, 2.0)]))
        whole = richardson_lucy(image, psfs, iterations=10, background=0.1)
        per_item = 7 * 8 * next_fast_len(64 + 7 - 1) ** 2
        monkeypatch.setattr(rl_module, "memory_budget", lambda device: 2 * per_item)
        # Per (item, channel) image: the same arithmetic as in the whole batch, bit for bit.
        torch.testing.assert_close(richardson_lucy(image, psfs, iterations=10, background=0.1), whole,
                                   rtol=0, atol=0)
        monkeypatch.setattr(rl_module, "memory_budget", lambda device: per_item // 2)
        tiled = richardson_lucy(image, psfs, iterations=10, background=0.1)
        # Tiles overlap by two PSF sizes: on this white-noise image (the worst case for how far
        # Richardson-Lucy carries information) the seams differ from the whole run by 1.6e-3.
        assert float((tiled - whole).abs().max()) < 3e-3 * float(whole.max())

    def test_out_of_memory_retries_with_a_smaller_budget(self, monkeypatch):
        budgets, real = [], rl_module._split_run

        def flaky(image, psf, background, budget, padding, **params):
            budgets.append(budget)
            if len(budgets) == 1:
                raise torch.OutOfMemoryError("simulated")
            return real(image, psf, background, budget, padding, **params)

        monkeypatch.setattr(rl_module, "memory_budget", lambda device: 1 << 30)
        monkeypatch.setattr(rl_module, "_split_run", flaky)
        image = torch.rand(1, 1, 32, 32) + 0.1
        richardson_lucy(image, torch.ones(3, 3) / 9, iterations=2)
        assert budgets == [1 << 30, 1 << 28]


def varying_grid(dtype=torch.float64):
    """A 2 x 3 grid of Gaussians whose width grows across the field (11 x 11)."""
    psfs = [torch.from_numpy(gaussian((11, 11), (1.0 + 0.4 * k, 1.2 + 0.2 * k))) for k in range(6)]
    return PSFGrid(torch.stack(psfs).reshape(2, 3, 11, 11).to(dtype))


class TestSpatiallyVarying:
    @pytest.mark.parametrize("operator", ["fft", "nu_conv"])
    def test_grid_of_identical_psfs_is_uniform_rl(self, operator):
        rng = np.random.default_rng(8)
        image = torch.from_numpy(rng.random((1, 2, 40, 52)) + 0.1)
        psf = torch.from_numpy(gaussian((9, 7), (1.5, 1.2)))
        grid = PSFGrid(psf.expand(3, 2, 9, 7))
        ours = sv_richardson_lucy(image, grid, iterations=15, operator=operator, background=0.05)
        torch.testing.assert_close(ours, richardson_lucy(image, psf, iterations=15, background=0.05),
                                   rtol=1e-9, atol=1e-11)

    @pytest.mark.parametrize("operator", ["fft", "nu_conv"])
    @pytest.mark.parametrize("blur", ["grid", "motion"])
    def test_operator_is_exactly_adjoint_in_float64(self, operator, blur):
        image = torch.zeros(1, 1, 36, 40, dtype=torch.float64)
        psf = varying_grid() if blur == "grid" else MotionField(
            torch.linspace(3, 9, 36)[:, None].expand(36, 40), torch.linspace(0, 120, 40).expand(36, 40))
        domain = SVDomain(image, psf, operator)
        gen = torch.Generator().manual_seed(0)
        x = torch.rand((2, 1) + domain.shape, generator=gen, dtype=torch.float64)
        y = torch.rand((2, 1) + domain.shape, generator=gen, dtype=torch.float64)
        lhs, rhs = float((domain.blur(x) * y).sum()), float((x * domain.adjoint(y)).sum())
        assert lhs == pytest.approx(rhs, rel=1e-12)

    def test_fft_and_nu_conv_operators_agree(self):
        rng = np.random.default_rng(9)
        image = torch.from_numpy(rng.random((1, 1, 40, 48)) + 0.1)
        fft = SVDomain(image, varying_grid(), "fft")
        nu = SVDomain(image, varying_grid(), "nu_conv")
        x = torch.rand((1, 1) + fft.shape, dtype=torch.float64)
        torch.testing.assert_close(fft.crop(fft.blur(x)), nu.crop(nu.blur(x)), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(sv_richardson_lucy(image, varying_grid(), iterations=8, operator="fft"),
                                   sv_richardson_lucy(image, varying_grid(), iterations=8, operator="nu_conv"))

    def test_restores_a_varying_blur_better_than_uniform_rl_and_keeps_flux(self):
        grid = varying_grid()
        scene = torch.from_numpy(beads((64, 72), 14, 12, seed=10))[None, None]
        observed = grid.blur(scene, padding="zeros") + 1.0
        sv = sv_richardson_lucy(observed, grid, iterations=80, background=1.0)
        uniform = richardson_lucy(observed, grid.psfs[0, 0], iterations=80, background=1.0)
        assert float((sv - scene).norm()) < 0.8 * float((uniform - scene).norm())
        expected = float((observed - 1.0).sum())
        assert abs(float(sv.sum()) - expected) / expected < 1e-3

    def test_tv_smooths_noise(self):
        grid = varying_grid(torch.float32)
        gen = torch.Generator().manual_seed(11)
        scene = torch.full((1, 1, 48, 48), 50.0)
        observed = torch.poisson(grid.blur(scene, padding="reflect"), generator=gen)

        def total_variation(x):
            return float((x[..., 1:, :] - x[..., :-1, :]).abs().sum() + (x[..., 1:] - x[..., :-1]).abs().sum())

        plain = sv_richardson_lucy(observed, grid, iterations=20)
        tv = sv_richardson_lucy(observed, grid, iterations=20, tv_weight=0.01)
        assert total_variation(tv) < 0.8 * total_variation(plain)

    def test_cost_model_picks_ffts_for_grids_and_nu_conv_for_motion(self):
        image = torch.zeros(1, 1, 128, 128)
        assert choose_operator(image, varying_grid(torch.float32)) == "fft"
        field = MotionField(torch.full((128, 128), 9.0), torch.linspace(0, 170, 128).expand(128, 128))
        assert choose_operator(image, field) == "nu_conv"

    def test_reachable_through_deblur_and_the_registry(self):
        grid = varying_grid(torch.float32)
        image = np.random.default_rng(12).random((40, 44)).astype(np.float32) + 0.1
        out = deblur_ops.deblur(image, grid, method="sv_richardson_lucy", iterations=5)
        expected = sv_richardson_lucy(torch.from_numpy(image)[None, None], grid, iterations=5)[0, 0].numpy()
        np.testing.assert_allclose(out, expected, rtol=1e-6)
        assert deblur_ops.restore.get_method("sv_richardson_lucy").spatially_varying

    def test_reachable_through_deblur_run(self, tmp_path):
        import tifffile

        from deblur_ops.apps.catalog import make_psf
        from deblur_ops.apps.cli import main

        image = np.random.default_rng(13).random((32, 36)).astype(np.float32) + 0.1
        tifffile.imwrite(tmp_path / "in.tif", image)
        assert main(["run", str(tmp_path / "in.tif"), str(tmp_path / "out.tif"), "--method", "sv_richardson_lucy",
                     "--psf-model", "gaussian", "--sigma", "1.5", "--param", "iterations=4", "--quiet"]) == 0
        psf = torch.as_tensor(np.asarray(make_psf("gaussian", sigma=1.5)), dtype=torch.float32)
        expected = richardson_lucy(torch.from_numpy(image)[None, None], psf, iterations=4)[0, 0].numpy()
        np.testing.assert_allclose(tifffile.imread(tmp_path / "out.tif"), expected, rtol=1e-4, atol=1e-5)

