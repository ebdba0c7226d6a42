"""The exact per-pixel motion blur (lines and camera-shake trajectories, the data model) against brute-force
rasterisers and the bank model."""
import numpy as np
import pytest
import torch

from deblur_ops.psf import (MotionField, camera_shake_trajectory, exact_motion_blur, exact_trajectory_blur,
                            line_kernels, linear_motion_kernel)


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


# -- per-pixel camera-shake trajectories (exact_trajectory_blur)

def brute_force_trajectory(x, trajectory, scale, rotation, padding, per_segment):
    """Each source pixel's PSF evaluated point by point on its kernel grid: the mean over time samples
    (``per_segment`` midpoints per segment, centred) of the bilinear tent at the pixel's scaled, rotated
    displacement, added into a padded canvas by hand."""
    t = np.asarray(trajectory, dtype=np.float64)
    samples = np.concatenate([[a + (i + 0.5) / per_segment * (b - a) for i in range(per_segment)]
                              for a, b in zip(t[:-1], t[1:])])
    samples -= samples.mean(0)
    H, W = x.shape
    reach = float(scale.max()) * float(np.hypot(samples[:, 0], samples[:, 1]).max())
    r = int(np.floor(reach)) + 1
    S = 2 * r + 1
    mode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[padding]
    xp = np.pad(x.numpy(), r, mode=mode)
    sp = np.pad(scale.numpy(), r, mode="edge" if padding == "zeros" else mode)
    rp = np.pad(rotation.numpy(), r, mode="edge" if padding == "zeros" else mode)
    q = np.arange(S) - r
    canvas = np.zeros((H + 4 * r, W + 4 * r))
    for i in range(H + 2 * r):
        for j in range(W + 2 * r):
            a = np.radians(rp[i, j])
            # counter-clockwise as displayed, rows down: up is -row
            d_row = sp[i, j] * (samples[:, 0] * np.cos(a) - samples[:, 1] * np.sin(a))
            d_col = sp[i, j] * (samples[:, 1] * np.cos(a) + samples[:, 0] * np.sin(a))
            tent_r = np.clip(1 - np.abs(q[None, :] - d_row[:, None]), 0, None)
            tent_c = np.clip(1 - np.abs(q[None, :] - d_col[:, None]), 0, None)
            k = np.einsum("ta,tb->ab", tent_r, tent_c) / len(samples)
            canvas[i:i + S, j:j + S] += xp[i, j] * k
    return canvas[2 * r:2 * r + H, 2 * r:2 * r + W]


def _random_case(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(9, 10, dtype=torch.float64, generator=g)
    trajectory = torch.cumsum(torch.randn(5, 2, dtype=torch.float64, generator=g), 0)
    scale = 0.3 + 1.2 * torch.rand(9, 10, dtype=torch.float64, generator=g)
    rotation = 360 * torch.rand(9, 10, dtype=torch.float64, generator=g) - 180
    return x, trajectory, scale, rotation


@pytest.mark.parametrize("padding", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("seed", [0, 1])
def test_trajectory_blur_matches_brute_force_rasteriser(padding, seed):
    x, trajectory, scale, rotation = _random_case(seed)
    step = 0.25
    longest = float((trajectory[1:] - trajectory[:-1]).norm(dim=1).max()) * float(scale.max())
    per_segment = int(np.ceil(longest / step))
    got = exact_trajectory_blur(x, trajectory, scale, rotation, padding=padding, step=step, rows_per_chunk=3)
    np.testing.assert_allclose(got.numpy(), brute_force_trajectory(x, trajectory, scale, rotation, padding,
                                                                   per_segment), atol=1e-12)


def test_trajectory_blur_converges_to_the_continuous_path():
    # A fine brute-force time average stands in for the continuous one; the error falls with step^2.
    x, trajectory, scale, rotation = _random_case(2)
    fine = brute_force_trajectory(x, trajectory, scale, rotation, "zeros", 200)
    errors = [np.abs(exact_trajectory_blur(x, trajectory, scale, rotation, padding="zeros", step=s).numpy()
                     - fine).max() for s in (0.4, 0.1)]
    assert errors[1] < 1e-3 and errors[1] < errors[0] / 4


def test_trajectory_psfs_keep_flux_and_centre_and_rotate():
    trajectory = camera_shake_trajectory(300, 9.0, seed=5)
    x = torch.zeros(31, 31, dtype=torch.float64)
    x[15, 15] = 1.0
    rows, cols = torch.meshgrid(torch.arange(31.0, dtype=torch.float64), torch.arange(31.0, dtype=torch.float64),
                                indexing="ij")
    psf = exact_trajectory_blur(x, trajectory, 1.3, 0.0, padding="zeros")
    assert float(psf.sum()) == pytest.approx(1.0)
    assert float((psf * rows).sum()) == pytest.approx(15.0) and float((psf * cols).sum()) == pytest.approx(15.0)
    # a quarter turn counter-clockwise as displayed: (row, col) offsets -> (-col, row)
    turned = exact_trajectory_blur(x, trajectory, 1.3, 90.0, padding="zeros")
    torch.testing.assert_close(turned, torch.rot90(psf, 1, (0, 1)), atol=1e-12, rtol=0)
    torch.testing.assert_close(exact_trajectory_blur(x, trajectory, 0.0), x)
    flat = torch.full((20, 20), 0.4)  # a uniform blur (the scatter model spreads unevenly where it varies)
    torch.testing.assert_close(exact_trajectory_blur(flat, trajectory, 1.2, 30.0), flat)


@pytest.mark.parametrize("kwargs, match", [
    ({"scale": -torch.ones(8, 8)}, "scale must be >= 0"),
    ({"scale": torch.ones(7, 8)}, "scale must have the image's shape"),
    ({"rotation": torch.full((8, 8), float("inf"))}, "rotation contains NaN or Inf"),
    ({"trajectory": torch.zeros(1, 2)}, r"trajectory must have shape \(N >= 2, 2\)"),
    ({"step": 0.0}, "step must be a positive number"),
    ({"padding": "mirror"}, "padding must be one of"),
    ({"scale": 10.0}, "reflect padding needs blur shorter"),
])
def test_trajectory_bad_input_is_named(kwargs, match):
    args = {"image": torch.rand(8, 8), "trajectory": torch.tensor([[0.0, 0.0], [1.0, 2.0]])}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        exact_trajectory_blur(**args)


def test_motion_field_sample_is_exact_line_blur():
    # A camera that only translates blurs every pixel with the same line: the sample must then be the
    # plain convolution with linear_motion_kernel (away from the borders, where padding differs).
    from deblur_ops.data.scenes import motion_blurred_photo, motion_field_photo

    moving = motion_field_photo("coins", translation=(6.0, 2.0), rotation_deg=0.0, noise_sigma=0.0, size=96)
    length, angle = float(np.hypot(6.0, 2.0)), float(np.degrees(np.arctan2(2.0, 6.0)))
    np.testing.assert_allclose(moving.field.length.numpy(), length)
    uniform = motion_blurred_photo("coins", length=length, angle=angle, noise_sigma=0.0, size=96)
    np.testing.assert_allclose(moving.clean, uniform.clean)
    np.testing.assert_allclose(moving.blurred[8:-8, 8:-8], uniform.blurred[8:-8, 8:-8], atol=1e-5)
    rolling = motion_field_photo("coins", rotation_deg=2.0, noise_sigma=0.0, size=96)
    assert float(rolling.field.length.max() - rolling.field.length.min()) > 2  # really spatially varying


class TestFineBank:
    """MotionField(bank="fine"): 1 px / 2 degree nodes, only the used filters built; the solvers' finer model."""

    def test_agrees_with_the_exact_blur_above_50_db_on_a_camera_field(self):
        from deblur_ops.apps import evaluate as ev

        # field:4, the camera-motion field on which the paper's bank scores lowest (about 50 dB here)
        paper, fine = (ev.field_model_error("camera", "field:4", 64, bank) for bank in ("paper", "fine"))
        assert fine > 50
        assert fine > paper + 3

    def test_transpose_is_the_adjoint(self):
        from deblur_ops.restore import BlurOperator

        field = MotionField.from_camera_motion((24, 24), (3.0, -2.0), 8.0).with_bank("fine")
        op = BlurOperator(torch.zeros(1, 1, 24, 24, dtype=torch.float64), field)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(op.data.shape, dtype=torch.float64, generator=g)
        y = torch.rand(op.data.shape, dtype=torch.float64, generator=g)
        lhs, rhs = (op.blur(x) * y).sum(), (x * op.adjoint(y)).sum()
        assert abs(float(lhs - rhs)) < 1e-12 * float(lhs.abs())

    def test_exact_on_its_nodes_and_holds_only_the_filters_it_uses(self):
        g = torch.Generator().manual_seed(5)
        x = torch.rand(1, 1, 24, 20, dtype=torch.float64, generator=g)
        length = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)[torch.randint(0, 4, (24, 20), generator=g)]
        angle = 2.0 * torch.randint(0, 90, (24, 20), generator=g).double()
        field = MotionField(length, angle, bank="fine")
        torch.testing.assert_close(field.blur(x), exact_motion_blur(x, length, angle), atol=1e-12, rtol=0)
        filters, grid = field.bank()
        _, idx, _ = field.nu_conv_inputs(field.shape, dtype=torch.float64)
        assert sorted(set(idx.flatten().tolist())) == list(range(len(filters)))  # every filter used, no other
        assert len(filters) < 4 * 24 * 20
        for k, (node_length, node_angle) in zip(filters, grid.tolist()):
            torch.testing.assert_close(k, linear_motion_kernel(node_length, node_angle, field.max_length,
                                                               dtype=torch.float64))

    def test_default_stays_the_paper_bank(self):
        from deblur_ops.psf import motion_bank

        field = MotionField(torch.full((8, 8), 34.5), torch.zeros(8, 8))
        assert field.bank_kind == "paper"
        bank, grid = field.bank()
        expected, expected_grid = motion_bank(dtype=torch.float64)
        assert bank.shape == (511, 35, 35)
        torch.testing.assert_close(bank, expected, atol=0, rtol=0)
        torch.testing.assert_close(grid, expected_grid, atol=0, rtol=0)
        # cropping and switching keep the maps; cropping keeps the bank
        fine = field.with_bank("fine")
        assert fine.crop(slice(0, 4), slice(2, 8)).bank_kind == "fine"
        torch.testing.assert_close(fine.crop(slice(0, 4), slice(2, 8)).length, field.length[:4, 2:])

    def test_unknown_bank_is_named(self):
        with pytest.raises(ValueError, match=r"bank must be one of \('paper', 'fine'\).*got 'coarse'"):
            MotionField(torch.ones(4, 4), torch.zeros(4, 4), bank="coarse")


class TestShakeTrainingData:
    """SyntheticBlur("shake"): spatially varying camera shake made by exact_trajectory_blur."""

    options = dict(patch=32, psf_size=15, max_length=15, seed=5)

    def test_shapes_ranges_and_spans(self):
        from deblur_ops.psf import trajectory_samples
        from deblur_ops.train import SyntheticBlur

        b = SyntheticBlur("shake", **self.options).batch(3)
        assert b["sharp"].shape == b["blurry"].shape == (3, 1, 32, 32)
        assert b["trajectory"].shape == (3, 200, 2) and b["trajectory"].dtype == torch.float64
        assert b["scale"].shape == b["rotation"].shape == (3, 32, 32)
        assert "psf" not in b and "length" not in b
        assert float(b["scale"].min()) > 0 and float(b["scale"].max()) <= 1
        assert float(b["rotation"].abs().max()) <= 30 * 2 ** 0.5
        for i in range(3):
            # the PSF at scale 1 spans at most max_length px, and the maps really vary
            span = 2 * float(trajectory_samples(b["trajectory"][i]).norm(dim=1).max())
            assert 1 - 1e-9 <= span <= 15 + 1e-9
            assert float(b["scale"][i].max() - b["scale"][i].min()) > 0
            assert float(b["rotation"][i].max() - b["rotation"][i].min()) > 0

    def test_deterministic_per_seed(self):
        from deblur_ops.train import SyntheticBlur

        a, b = (SyntheticBlur("shake", **self.options).batch(2) for _ in range(2))
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)
        other = SyntheticBlur("shake", **{**self.options, "seed": 6}).batch(2)
        assert not torch.equal(other["blurry"], a["blurry"])

    def test_noise_free_sample_is_the_exact_trajectory_blur_of_the_sharp_one(self):
        from deblur_ops.train import SyntheticBlur

        b = SyntheticBlur("shake", noise=(0.0, 0.0), **self.options).batch(3)
        r = 15 // 2 + 1  # the farthest reach of a 15 px span, tent included: beyond it, no border effect
        for i in range(3):
            # A finer time sampling than the data's (step 0.1 px at the crop's largest scale, which the
            # patch may not hold): the two differ by the sampling error only, ~1e-5 here.
            expected = exact_trajectory_blur(b["sharp"][i, 0].double(), b["trajectory"][i], b["scale"][i].double(),
                                             b["rotation"][i].double(), padding="zeros", step=0.02)
            blurry = b["blurry"][i, 0, r:-r, r:-r].double()
            torch.testing.assert_close(blurry, expected[r:-r, r:-r], atol=1e-4, rtol=0)
            assert float((blurry - b["sharp"][i, 0, r:-r, r:-r]).abs().max()) > 1e-2  # really blurred

    def test_only_the_exact_model_is_offered(self):
        from deblur_ops.train import SyntheticBlur

        with pytest.raises(ValueError, match="psf='shake' has only the exact trajectory model.*forward='bank'"):
            SyntheticBlur("shake", forward="bank", **self.options)

    def test_blind_recipes_take_it_with_set_data_shake_and_keep_uniform_by_default(self):
        from types import SimpleNamespace

        from deblur_ops.train import autoencoder, madn
        from deblur_ops.train._blind import blind_data

        assert autoencoder.RECIPE_DEFAULTS["data"] == madn.RECIPE_DEFAULTS["data"] == "uniform"
        options = SimpleNamespace(images=None, seed=0)
        cfg = {"max_length": 9.0, "noise_low": 0.0, "noise_high": 0.0}
        train, val, described = blind_data(options, 32, {**cfg, "data": "shake"})
        assert train.kind == val.kind == "shake" and "exact trajectory" in described["kind"]
        assert blind_data(options, 32, cfg)[0].kind == "uniform"
        with pytest.raises(ValueError, match=r"data must be one of \('uniform', 'shake'\).*got 'field'"):
            blind_data(options, 32, {**cfg, "data": "field"})


class TestPooledBlur:
    """PooledBlur: shake pairs made once (they are slow to make), served turned, flipped, freshly noised."""

    options = dict(patch=32, psf_size=15, max_length=15, seed=5, noise=(0.0, 0.0))

    def test_draws_are_turned_or_flipped_pool_pairs_with_fresh_noise_in_range(self):
        from deblur_ops.train import SyntheticBlur
        from deblur_ops.train.datasets import PooledBlur

        pool = PooledBlur(SyntheticBlur("shake", **self.options), 5, noise=(0.01, 0.02), seed=1)
        assert len(pool) == 5
        b = pool.batch(12)
        assert b["sharp"].shape == b["blurry"].shape == (12, 1, 32, 32)
        assert float(b["sigma"].min()) >= 0.01 and float(b["sigma"].max()) <= 0.02
        for i in range(12):
            # each draw's sharp patch is one of the 8 turns/flips of a pool pair, and its blurry one the same
            # transform of that pair's blurry patch, plus noise of its sigma
            found = False
            for j in range(5):
                for flip in (False, True):
                    for k in range(4):
                        def t(x):
                            return torch.rot90(x.flip(-1) if flip else x, k, (-2, -1))
                        if torch.equal(t(pool.sharp[j]), b["sharp"][i]):
                            residual = b["blurry"][i] - t(pool.blurry[j])
                            assert float(residual.std()) == pytest.approx(float(b["sigma"][i]), rel=0.25)
                            found = True
            assert found
        again = PooledBlur(SyntheticBlur("shake", **self.options), 5, noise=(0.01, 0.02), seed=1)
        torch.testing.assert_close(again.batch(12)["blurry"], b["blurry"], atol=0, rtol=0)

    def test_resumes_the_same_sequence(self):
        from deblur_ops.train import SyntheticBlur
        from deblur_ops.train.datasets import PooledBlur

        made = []
        pool = PooledBlur(SyntheticBlur("uniform", **self.options), 4, seed=0, progress=lambda d, t: made.append((d, t)))
        assert made == [(4, 4)]  # one chunk of up to 16 pairs
        state = pool.state_dict()
        first = pool.batch(3)
        pool.load_state_dict(state)
        torch.testing.assert_close(pool.batch(3)["blurry"], first["blurry"], atol=0, rtol=0)

    def test_refuses_a_noisy_stream_and_bad_sizes(self):
        from deblur_ops.train import SyntheticBlur
        from deblur_ops.train.datasets import PooledBlur

        with pytest.raises(ValueError, match=r"must be noise-free \(noise=\(0, 0\)"):
            PooledBlur(SyntheticBlur("uniform", **{**self.options, "noise": (0.01, 0.01)}), 4)
        with pytest.raises(ValueError, match="pool size must be a positive integer, got 0"):
            PooledBlur(SyntheticBlur("uniform", **self.options), 0)

    def test_blind_recipes_pool_with_set_pool(self):
        from types import SimpleNamespace

        from deblur_ops.train import autoencoder, madn
        from deblur_ops.train._blind import blind_data
        from deblur_ops.train.datasets import PooledBlur

        assert autoencoder.RECIPE_DEFAULTS["pool"] == madn.RECIPE_DEFAULTS["pool"] == 0
        options = SimpleNamespace(images=None, seed=0)
        cfg = {"max_length": 9.0, "noise_low": 0.005, "noise_high": 0.01, "data": "shake"}
        train, val, described = blind_data(options, 32, {**cfg, "pool": 3})
        assert isinstance(train, PooledBlur) and len(train) == 3 and train.noise == (0.005, 0.01)
        assert val.kind == "shake" and val.noise == (0.005, 0.01) and described["pool"] == 3
        with pytest.raises(ValueError, match="pool must be 0 .* got -1"):
            blind_data(options, 32, {**cfg, "pool": -1})

def test_shake_maps_are_linear_ramps_and_refuse_a_vanishing_scale():
    from deblur_ops.psf import shake_maps

    scale, rotation = shake_maps((6, 8), 90.0, 0.4, 12.0)  # scale grows upwards, rotation to the left
    torch.testing.assert_close(scale[:, 0], scale[:, 7])
    assert torch.all(scale[:-1] > scale[1:]) and float(scale.mean()) == pytest.approx(1.0)
    torch.testing.assert_close(rotation[0], rotation[5])
    assert torch.all(rotation[:, :-1] > rotation[:, 1:])
    left = torch.full((6,), 12.0 * 3.5 / 4, dtype=torch.float64)  # 12 degrees times -right, right = -3.5 / 4
    torch.testing.assert_close(rotation[:, 0], left, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match=r"scale_change 0.9 makes the scale reach .* <= 0"):
        shake_maps((16, 16), 45.0, 0.9, 0.0)
