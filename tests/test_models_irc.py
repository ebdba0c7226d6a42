"""IRC-Net, Motion-Net and the blind pipeline (paper 004): equality with `irc`, gradients, training, errors."""
import numpy as np
import pytest
import torch

import deblur_ops
from deblur_ops import psf as psf_lib
from deblur_ops.models import BlindIRC, IRCNet, MotionNet, load_pretrained, motion_mse, pretrained_models
from deblur_ops.models.motion_net import angle_to_direction, direction_to_angle, motion_loss
from deblur_ops.restore.irc import FFTGather, irc


@pytest.fixture(scope="module")
def small_net():
    return IRCNet(stages=3, inner_steps=2, max_length=9)


def _image(seed=0, size=40, channels=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, size, size, generator=g)


def test_untrained_equals_irc_uniform_psf(small_net):
    y = _image(1)
    k = psf_lib.linear_motion_kernel(7, 30)
    ours = small_net(y, k, noise_sigma=0.01)
    theirs = irc(y, k, noise_sigma=0.01, stages=3, irc_iterations=2, inverse="bank")
    assert (ours - theirs).abs().max() < 1e-4


def test_untrained_equals_irc_motion_field_bank():
    """A motion field on IRC-Net's own bank: the same as irc given that bank through idx/weights."""
    net = IRCNet(stages=2, inner_steps=2, max_length=9)
    y = _image(2, 36)
    field = psf_lib.MotionField.from_camera_motion((36, 36), (3.0, 2.0), 4.0)
    idx, weights = net.motion_inputs(field.length.float(), field.angle.float())
    ours = net(y, motion=(field.length, field.angle), noise_sigma=0.02)
    bank, size = net._crop(idx, weights)  # the bank cut to the support of the filters in use
    used = idx[weights != 0].unique()
    assert bank.shape[-1] < net.bank.shape[-1] and bank[used].sum((-2, -1)).sub(1).abs().max() < 1e-6

    class Inputs:
        spatially_varying = True

        def nu_conv_inputs(self, shape, *, dtype=torch.float32, device=None):
            return bank.to(dtype), idx, weights.to(dtype)

    theirs = irc(y, Inputs(), noise_sigma=0.02, stages=2, irc_iterations=2, filter_size=size,
                 inverse="bank")
    assert (ours - theirs).abs().max() < 1e-4


def test_untrained_grid_net_equals_irc():
    """inverse="grid": the untrained network is the default irc with the same stage structure."""
    net = IRCNet(stages=3, inner_steps=2, max_length=9, inverse="grid")
    y = _image(5, 40)
    k = psf_lib.linear_motion_kernel(7, 30)
    assert (net(y, k, noise_sigma=0.01) - irc(y, k, noise_sigma=0.01, stages=3, irc_iterations=2)).abs().max() < 1e-4
    field = psf_lib.MotionField.from_camera_motion((40, 40), (3.0, 2.0), 4.0)
    idx, weights = net.motion_inputs(field.length.float(), field.angle.float())
    bank, _ = net._crop(idx, weights)

    class Inputs:
        spatially_varying = True

        def nu_conv_inputs(self, shape, *, dtype=torch.float32, device=None):
            return bank.to(dtype), idx, weights.to(dtype)

    ours = net(y, motion=(field.length, field.angle), noise_sigma=0.02)
    theirs = irc(y, Inputs(), noise_sigma=0.02, stages=3, irc_iterations=2)
    assert (ours - theirs).abs().max() < 1e-4


def test_grid_net_gradients_reach_every_parameter():
    net = IRCNet(stages=2, inner_steps=2, max_length=9, inverse="grid", prior_filters=4)
    assert not hasattr(net, "inverse_delta") and net.config()["inverse"] == "grid"
    length, angle = torch.linspace(3, 7, 32).expand(1, 32, 32), torch.full((1, 32, 32), 30.0)
    net(_image(6, 32), motion=(length, angle)).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    rebuilt = IRCNet(**net.config())
    rebuilt.load_state_dict(net.state_dict())


def test_grid_net_bad_options():
    with pytest.raises(ValueError, match="inverse must be one of"):
        IRCNet(stages=1, max_length=5, inverse="fft")
    with pytest.raises(ValueError, match="delta_size"):
        IRCNet(stages=1, max_length=5, inverse="grid", delta_size=3)
    with pytest.raises(ValueError, match="momentum"):
        IRCNet(stages=1, max_length=5, inverse="grid", momentum=1.5)
    with pytest.raises(ValueError, match="inverse='grid' only"):
        IRCNet(stages=1, max_length=5, momentum=0.2)


def test_fft_gather_matches_nu_conv_and_gradients():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 9, 11, dtype=torch.float64, generator=g, requires_grad=True)
    bank = torch.rand(4, 5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    idx = torch.randint(4, (2, 3, 9, 11), generator=g)
    w = torch.rand(2, 3, 9, 11, dtype=torch.float64, generator=g)
    w[:, 2] = 0
    w.requires_grad_(True)
    expected = deblur_ops.nu_conv(x, bank, idx, w, mode="gather", padding="zeros")
    assert torch.allclose(FFTGather(bank, idx, w, 2)(x), expected, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, b, w: FFTGather(b, idx, w, 2)(x), (x, bank, w))


def test_gradients_reach_every_parameter(small_net):
    net = IRCNet(stages=2, inner_steps=1, max_length=9)
    y = _image(3, 32)
    length, angle = torch.full((1, 32, 32), 5.0), torch.full((1, 32, 32), 30.0)
    out = net(y, motion=(length, angle))
    out.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_gradients_flow_to_motion_net():
    net = BlindIRC({"width": 4, "max_length": 9.0}, {"stages": 1, "inner_steps": 1, "max_length": 9})
    net(_image(4, 32)).mean().backward()
    for name, p in net.motion_net.named_parameters():
        if "pool" in name:  # the image-level ASPP branch sees a constant after instance norm
            continue
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
    assert sum(float(p.grad.abs().sum()) for p in net.motion_net.parameters() if p.grad is not None) > 0


@pytest.mark.parametrize("channels,size", [(1, (37, 45)), (3, (33, 40))])
def test_shapes_odd_sizes_and_colour(channels, size):
    net = IRCNet(stages=1, inner_steps=1, max_length=5)
    y = torch.rand(2, channels, *size)
    assert net(y, psf_lib.linear_motion_kernel(5, 10)).shape == y.shape
    m = MotionNet(width=4)
    length, angle = m.motion(y)
    assert length.shape == (2, *size) and angle.shape == (2, *size)


def test_motion_smoothing_keeps_smooth_fields_and_calms_noisy_ones():
    from deblur_ops.models.motion_net import smooth_motion

    g = torch.Generator().manual_seed(0)
    rows = torch.arange(40.0)[:, None].expand(40, 50)
    smooth_length, smooth_angle = (5 + rows / 10)[None], (30 + rows / 4)[None]  # linear in y
    noisy_length = smooth_length + torch.randn(1, 40, 50, generator=g)
    noisy_angle = smooth_angle + 10 * torch.randn(1, 40, 50, generator=g)
    length, direction = smooth_motion(noisy_length, angle_to_direction(noisy_angle), 9)
    angle = direction_to_angle(direction)
    inner = (slice(None), slice(9, -9), slice(9, -9))  # a linear field is kept exactly inside
    assert float((length - smooth_length)[inner].abs().max()) < 0.6  # the noise was 1 px rms
    assert float(motion_mse(length, angle, smooth_length, smooth_angle)) < 0.2 * float(
        motion_mse(noisy_length, noisy_angle, smooth_length, smooth_angle))
    # opposite blur lines (0 and 180 degrees) agree instead of cancelling
    l, d = smooth_motion(torch.full((1, 8, 8), 5.0), angle_to_direction(torch.tensor([0.0, 179.9]).repeat(32)
                                                                      .reshape(1, 8, 8)), 3)
    assert bool((direction_to_angle(d) - 90).abs().min() > 85)
    # MotionNet: motion() smooths, forward() (the training target) does not
    net, raw = MotionNet(width=4, smoothing=9), MotionNet(width=4, smoothing=0)
    raw.load_state_dict(net.state_dict())
    y = torch.rand(1, 1, 36, 44, generator=g)
    with torch.no_grad():
        assert torch.equal(net(y)[0], raw(y)[0])
        assert torch.allclose(raw.motion(y)[0], raw(y)[0])
        assert net.motion(y)[0].diff(dim=-1).abs().mean() < raw.motion(y)[0].diff(dim=-1).abs().mean()
    assert net.config()["smoothing"] == 9
    for bad in (4, -1, 2.5, True):
        with pytest.raises(ValueError, match="smoothing must be 0"):
            MotionNet(width=4, smoothing=bad)


def test_direction_encoding_identifies_opposite_angles():
    a = torch.tensor([[[0.0, 179.0, 90.0]]])
    d = angle_to_direction(a)
    assert torch.allclose(direction_to_angle(d), a, atol=1e-4)
    assert torch.allclose(angle_to_direction(a + 180), d, atol=1e-6)
    l = torch.full_like(a, 10.0)
    assert float(motion_mse(l, a + 180, l, a).max()) < 1e-8
    assert float(motion_loss(l, d, l, a + 180)) < 1e-8


def test_tiny_training_lowers_the_loss(tmp_path):
    from deblur_ops.train.irc import train_irc
    from deblur_ops.train import TrainOptions

    options = TrainOptions(steps=6, batch_size=2, patch=24, lr=1e-2, out=tmp_path / "irc.pt", progress=False,
                           validate_every=3, extra={"stages": 1, "inner_steps": 1, "max_length": 7,
                                                    "train_max_length": 7, "psf_size": 7, "delta_size": 3,
                                                    "inverse": "bank", "data": "linear", "prior_filters": 2})
    info = train_irc(options)
    history = info["validation_history"]
    assert [v["step"] for v in history] == [0, 3, 6]
    assert info["validation_psnr"] == max(v["psnr"] for v in history)  # the best weights are kept
    from deblur_ops.models import load_weights

    net = load_weights(options.out, IRCNet)
    assert net.config()["max_length"] == 7 and net.stages == 1
    assert net.trained_info["steps"] == 6


def test_grid_recipe_on_mixed_data(tmp_path):
    """--set inverse=grid data=mixed: trains on uniform and field batches in turn, saves a grid net."""
    from deblur_ops.models import load_weights
    from deblur_ops.train.irc import train_irc
    from deblur_ops.train import TrainOptions

    small = {"stages": 1, "inner_steps": 1, "max_length": 7, "train_max_length": 7, "psf_size": 7}
    options = TrainOptions(steps=2, batch_size=1, patch=24, lr=1e-3, out=tmp_path / "g.pt", progress=False,
                           validate_every=2, extra={**small, "inverse": "grid", "data": "mixed"})
    info = train_irc(options)
    assert info["data"]["kind"] == "linear and field, alternating batches" and info["loss"] == "l2"
    net = load_weights(options.out, IRCNet)
    assert net.inverse == "grid" and net.momentum.shape == (1,)
    bad = TrainOptions(steps=1, out=tmp_path / "b.pt", progress=False, extra={**small, "data": "shake"})
    with pytest.raises(ValueError, match="data must be linear, field or mixed"):
        train_irc(bad)
    bad = TrainOptions(steps=1, out=tmp_path / "b.pt", progress=False, extra={**small, "loss": "l1"})
    with pytest.raises(ValueError, match="loss must be one of"):
        train_irc(bad)


def test_psnr_loss_weighs_every_patch_by_its_psnr():
    from deblur_ops.train.irc import IRC_LOSSES

    sharp = torch.zeros(2, 1, 4, 4)
    out = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.001)])  # 20 and 60 dB
    assert float(IRC_LOSSES["psnr"](out, {"sharp": sharp})) == pytest.approx(-4.0)  # -(20 + 60) / 2 / 10
    assert float(IRC_LOSSES["l2"](out, {"sharp": sharp})) == pytest.approx((0.01 + 1e-6) / 2)


def test_prior_filters_are_zero_sum():
    """A prior filter's sum would penalise the mean intensity; the network only uses zero-sum ones."""
    net = IRCNet(stages=2, inner_steps=1, max_length=7, inverse="grid", prior_filters=3)
    y, k = _image(7, 32), psf_lib.linear_motion_kernel(5, 0)
    before = net(y, k, noise_sigma=0.01)
    with torch.no_grad():
        net.priors.add_(0.3)  # the same constant on every tap: nothing changes
    torch.testing.assert_close(net(y, k, noise_sigma=0.01), before)
    assert net.prior_filters().sum((-2, -1)).abs().max() < 1e-6


def test_irc_net_training_lowers_the_loss():
    from deblur_ops.train import SyntheticBlur

    torch.manual_seed(0)
    batch = SyntheticBlur("linear", patch=24, psf_size=7, max_length=7, seed=1).batch(2)
    net = IRCNet(stages=2, inner_steps=1, max_length=7, delta_size=3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def loss():
        out = net(batch["blurry"], motion=(batch["length"], batch["angle"]), noise_sigma=batch["sigma"])
        return ((out - batch["sharp"]) ** 2).mean()

    first = float(loss())
    for _ in range(8):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert float(loss()) < 0.9 * first


def test_motion_net_training_lowers_the_loss():
    torch.manual_seed(0)
    from deblur_ops.train import SyntheticBlur

    data = SyntheticBlur("field", patch=32, psf_size=9, max_length=9, seed=0)
    net = MotionNet(width=4, max_length=9.0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    batch = data.batch(4)

    def loss():
        length, direction = net(batch["blurry"])
        return motion_loss(length, direction, batch["length"], batch["angle"])

    first = float(loss())
    for _ in range(15):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert float(loss()) < first


def test_every_shipped_weight_loads():
    for name, description in pretrained_models().items():
        assert "[not shipped]" not in description, name
        model = load_pretrained(name)
        assert not model.training and model.trained_info["steps"] > 0


def test_methods_run_through_deblur():
    image = np.random.default_rng(0).random((40, 44)).astype(np.float32)
    k = psf_lib.linear_motion_kernel(5, 20).numpy()
    assert deblur_ops.deblur(image, k, method="irc-net").shape == image.shape
    assert deblur_ops.deblur(image, method="blind-irc").shape == image.shape
    rgb = np.random.default_rng(1).random((36, 40, 3)).astype(np.float32)
    assert deblur_ops.deblur(rgb, method="blind-irc").shape == rgb.shape
    field = deblur_ops.estimate_motion(image)
    assert field.shape == image.shape and float(field.length.min()) >= 1
    assert deblur_ops.deblur(image, field, method="irc-net").shape == image.shape


def test_bad_inputs_are_clear(small_net):
    y = _image(5, 32)
    k = psf_lib.linear_motion_kernel(5, 0)
    maps = (torch.full((1, 32, 32), 5.0), torch.zeros(1, 32, 32))
    with pytest.raises(ValueError, match="exactly one blur description"):
        small_net(y, k, motion=maps)
    with pytest.raises(ValueError, match="exactly one blur description"):
        small_net(y)
    with pytest.raises(ValueError, match="motion maps are"):
        small_net(y, motion=(torch.full((1, 30, 32), 5.0), torch.zeros(1, 30, 32)))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        small_net(y[0], k)
    with pytest.raises(ValueError, match="both idx and weights"):
        small_net(y, idx=torch.zeros(1, 4, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="max_length must be odd"):
        IRCNet(max_length=8)
    with pytest.raises(ValueError, match="psf=None"):
        deblur_ops.deblur(np.zeros((32, 32), np.float32), k.numpy(), method="blind-irc")
    with pytest.raises(ValueError, match="needs a psf"):
        deblur_ops.deblur(np.zeros((32, 32), np.float32), method="irc-net")
    with pytest.raises(ValueError, match="unknown pretrained model"):
        load_pretrained("nope")
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 3\)"):
        deblur_ops.estimate_motion(np.zeros((4, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"image must be at least 16x16 pixels, got \(8, 30\)"):
        deblur_ops.estimate_motion(np.zeros((8, 30), np.float32))
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        deblur_ops.estimate_motion(np.zeros((32, 32), np.float32), device="gpu")
    with pytest.raises(TypeError, match="NumPy array or a torch tensor"):
        deblur_ops.estimate_motion([[0.0] * 32] * 32)


@pytest.mark.parametrize("length,angle", [(15, 30), (11, 120)])
def test_shipped_models_on_a_real_photo(length, angle):
    """The shipped weights against independent references on an unseen picture: the true motion for
    Motion-Net, the blurred input and the untrained solver with the same stages for IRC-Net."""
    from deblur_ops.data import sample_image, to_batch
    from deblur_ops.data.degrade import add_gaussian_noise, blur
    from deblur_ops.data.metrics import psnr

    sharp = to_batch(sample_image("camera", size=128))  # never seen in training
    k = psf_lib.linear_motion_kernel(length, angle)
    observed = add_gaussian_noise(blur(sharp, k), 0.01, seed=0)
    field = deblur_ops.estimate_motion(observed[0, 0].numpy())
    error = (field.angle - angle).remainder(180)
    assert float(torch.minimum(error, 180 - error).median()) < 20  # measured 10.8 and 3.9 degrees
    assert abs(float(field.length.median()) - length) < 5  # measured 15.2 and 15.6 px
    ours = torch.from_numpy(deblur_ops.deblur(observed[0, 0].numpy(), k.numpy(), method="irc-net"))
    untrained = irc(observed, k, stages=5, irc_iterations=2, inverse="bank")  # the paper's solver
    score = psnr(ours[None, None].clamp(0, 1), sharp)
    assert score > psnr(observed, sharp) + 4.0  # measured +5.9 and +4.7 dB
    assert score > psnr(untrained.clamp(0, 1), sharp) + 1.0  # measured +3.3 and +1.7 dB
    # The shipped net is a trained grid IRC-Net, so its own untrained state is irc's default
    # (12 stages): +0.58 and -0.06 dB here (+0.72 dB on average over Table 1).
    assert score > psnr(irc(observed, k).clamp(0, 1), sharp) - 0.2


def test_field_training_data_is_exact_line_blur_unless_asked_for_the_bank():
    from deblur_ops.psf import exact_motion_blur
    from deblur_ops.train import SyntheticBlur

    options = dict(patch=40, psf_size=15, max_length=11, noise=(0.0, 0.0), seed=1)
    exact = SyntheticBlur("field", **options).batch(2)
    bank = SyntheticBlur("field", forward="bank", **options).batch(2)
    torch.testing.assert_close(exact["sharp"], bank["sharp"])
    torch.testing.assert_close(exact["length"], bank["length"])
    r = 6  # half the longest line (11 px) plus one: inside this border a patch pixel sees only patch pixels
    for i in range(2):
        again = exact_motion_blur(exact["sharp"][i:i + 1], exact["length"][i], exact["angle"][i], padding="zeros")
        torch.testing.assert_close(exact["blurry"][i, :, r:-r, r:-r], again[0, :, r:-r, r:-r], atol=1e-5, rtol=0)
    gap = (exact["blurry"] - bank["blurry"]).abs().max()
    assert 1e-5 < float(gap) < 0.05  # the bank's interpolation error: small, but there
    with pytest.raises(ValueError, match="forward must be one of"):
        SyntheticBlur("field", forward="scatter", **options)
