"""Paper 001: a CNN that non-linearly combines a stack of Wiener deconvolutions (``WienerStackNet``).

The blurry image is deconvolved with 15 Wiener filters of assumed SNRs 9, 13, ..., 65 dB (one
fused :func:`deblur_ops.wiener_stack` call); the 15 results and the blurry image are stacked as
channels (16 per colour channel, 48 for RGB) and fed to a first convolution, a configurable number
of residual blocks (conv-ReLU-conv with a skip; 64 channels, 5x5 kernels, 12 blocks in the paper)
and a final convolution back to the image channels, optionally followed by a bilateral filter
(window 7, sigma_color 40 of 255, sigma_space 10 in the paper). The paper's baseline, one Wiener
filter at the dataset-average SNR plus the same bilateral filter, is :func:`wiener_bilateral`.

Registered methods: ``"wiener-stack-net"`` (the shipped trained network) and ``"wiener-bilateral"``
(the baseline). Pretrained name: ``"wiener-stack-net"``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import validation as v
from ..ops import wiener_stack
from ..restore._common import check_inputs, check_positive
from ..restore.registry import register
from ..train.recipes import register_recipe
from ._channels import fold_channels, positive_int
from .methods import cached_model
from .pretrained import register_pretrained

# Paper 001, section 1.2: "values in the range from 9 dB to 65 dB, in steps of 4 dB".
PAPER_SNR_DB = tuple(float(s) for s in range(9, 66, 4))
# Paper 001, section 2.3: "window size = 7, sigma_color = 40, and sigma_space = 10" on 8-bit values.
BILATERAL_WINDOW = 7
BILATERAL_SIGMA_COLOR = 40 / 255
BILATERAL_SIGMA_SPACE = 10.0
# Paper 001's baseline SNR, "the average SNR of all images in our dataset": the mean over the
# training patches of 10 log10(var(k * x) / sigma^2), the noise-free blurred patch over the noise.
# Measured by the "wiener-stack-net" recipe (dataset_snr_db) on 4096 patches of its training data
# (SyntheticBlur uniform PSFs up to 27 px, 64 x 64 patches, sigma uniform in [0.3 %, 1.5 %]): 15.14 dB.
# Low-contrast patches pull the mean down; it is the stored value, rounded, that the baseline uses.
DATASET_SNR_DB = 15.1


def bilateral_filter(image: torch.Tensor, *, window: int = BILATERAL_WINDOW,
                     sigma_color: float = BILATERAL_SIGMA_COLOR,
                     sigma_space: float = BILATERAL_SIGMA_SPACE) -> torch.Tensor:
    r"""Edge-preserving bilateral filter (Tomasi and Manduchi 1998), differentiable, in plain torch.

    Each output pixel is the mean of its ``window`` x ``window`` neighbours weighted by
    :math:`\exp(-d^2 / 2\sigma_s^2 - \|I_q - I_p\|^2 / 2\sigma_c^2)`, d the distance in pixels and
    the colour distance taken over all channels together (as OpenCV does for colour images).
    Borders are continued by replicating the edge pixels.

    Args:
        image: (B, C, H, W) float tensor, values in [0, 1] for the default ``sigma_color``.
        window: odd side of the neighbourhood.
        sigma_color: range sigma in image units (paper 001: 40 on the 8-bit scale = 40/255).
        sigma_space: spatial sigma in pixels.

    Returns:
        Tensor of the image's shape and dtype.

    Raises:
        ValueError: not (B, C, H, W) float, an even or non-positive window, non-positive sigmas.

    Example:
        >>> flat = torch.full((1, 1, 16, 16), 0.5)
        >>> torch.allclose(bilateral_filter(flat), flat)
        True
    """
    v.require_tensor(image, "image")
    if image.dim() != 4:
        raise ValueError(f"image must have shape (B, C, H, W), got shape {tuple(image.shape)}")
    v.require_float(image, "image")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window!r}")
    check_positive(sigma_color, "sigma_color")
    check_positive(sigma_space, "sigma_space")
    r = window // 2
    padded = F.pad(image, (r, r, r, r), mode="replicate")
    h, w = image.shape[-2:]
    numerator = torch.zeros_like(image)
    denominator = torch.zeros_like(image[:, :1])
    # A loop over the window's offsets keeps memory at a few image copies, unlike unfold (window^2 copies).
    for dy in range(window):
        for dx in range(window):
            neighbour = padded[..., dy:dy + h, dx:dx + w]
            spatial = ((dy - r) ** 2 + (dx - r) ** 2) / (2 * sigma_space ** 2)
            colour = (neighbour - image).square().sum(1, keepdim=True) / (2 * sigma_color ** 2)
            weight = torch.exp(-colour - spatial)
            numerator = numerator + weight * neighbour
            denominator = denominator + weight
    return numerator / denominator


class ResBlock(nn.Module):
    """conv-ReLU-conv with an identity skip (paper 001 Fig. 3), ``width`` channels, same size.

    Example:
        >>> ResBlock(8)(torch.rand(1, 8, 12, 12)).shape
        torch.Size([1, 8, 12, 12])
    """

    def __init__(self, width: int, kernel_size: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv2d(width, width, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))


class WienerStackNet(nn.Module):
    """Paper 001's network: Wiener stack + blurry image -> conv -> ResBlocks -> conv (-> bilateral).

    Args:
        channels: image channels C (3 for the paper's RGB set-up: 15 x 3 + 3 = 48 input channels).
        width: feature channels of every convolution (paper: 64).
        blocks: number of residual blocks (paper: varied 19 -> 12, settled on 12).
        kernel_size: odd side of every convolution kernel (paper: 5).
        snr_db: SNRs (dB) of the Wiener filters (paper: 9, 13, ..., 65).
        residual_snr_db: None (the paper: the final conv's output is the estimate) or one of
            ``snr_db``: the final conv then predicts a correction added to the Wiener result at
            that SNR, which starts training from a sensible image instead of from zero.
        bilateral: apply :func:`bilateral_filter` as the last layer (paper Fig. 3).
        bilateral_window, bilateral_sigma_color, bilateral_sigma_space: its parameters.

    Shapes:
        ``forward(blurry (B, C, H, W), psf (kh, kw) or (B, kh, kw)) -> (B, C, H, W)``; any H, W
        at least the PSF size (the network is fully convolutional with stride 1).

    Example:
        >>> net = WienerStackNet(channels=3, width=8, blocks=1)
        >>> net.in_channels
        48
        >>> net(torch.rand(2, 3, 33, 31), torch.ones(5, 5) / 25).shape
        torch.Size([2, 3, 33, 31])
    """

    def __init__(self, channels: int = 3, width: int = 64, blocks: int = 12, kernel_size: int = 5,
                 snr_db: Sequence[float] = PAPER_SNR_DB, residual_snr_db: float | None = None,
                 bilateral: bool = False, bilateral_window: int = BILATERAL_WINDOW,
                 bilateral_sigma_color: float = BILATERAL_SIGMA_COLOR,
                 bilateral_sigma_space: float = BILATERAL_SIGMA_SPACE):
        super().__init__()
        self.channels = positive_int(channels, "channels")
        positive_int(width, "width")
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
            raise ValueError(f"blocks must be an integer >= 0, got {blocks!r}")
        if positive_int(kernel_size, "kernel_size") % 2 == 0:
            raise ValueError(f"kernel_size must be odd so that the convolutions keep the size, got {kernel_size}")
        snr = [float(s) for s in snr_db]
        if not snr or not all(math.isfinite(s) for s in snr):
            raise ValueError(f"snr_db must be a non-empty sequence of finite numbers, got {snr_db!r}")
        if residual_snr_db is not None and float(residual_snr_db) not in snr:
            raise ValueError(f"residual_snr_db must be None or one of snr_db {snr}, got {residual_snr_db!r}")
        self.residual_index = None if residual_snr_db is None else snr.index(float(residual_snr_db))
        self.register_buffer("snr_db", torch.tensor(snr, dtype=torch.float64), persistent=False)
        self.in_channels = channels * (len(snr) + 1)
        self.head = nn.Conv2d(self.in_channels, width, kernel_size, padding=kernel_size // 2)
        self.blocks = nn.Sequential(*[ResBlock(width, kernel_size) for _ in range(blocks)])
        self.tail = nn.Conv2d(width, channels, kernel_size, padding=kernel_size // 2)
        self.bilateral = bool(bilateral)
        self.bilateral_options = {"window": bilateral_window, "sigma_color": bilateral_sigma_color,
                                  "sigma_space": bilateral_sigma_space}
        self._config = {"channels": channels, "width": width, "blocks": blocks, "kernel_size": kernel_size,
                        "snr_db": snr, "residual_snr_db": residual_snr_db, "bilateral": self.bilateral,
                        "bilateral_window": bilateral_window, "bilateral_sigma_color": bilateral_sigma_color,
                        "bilateral_sigma_space": bilateral_sigma_space}

    def config(self) -> dict:
        """Keyword arguments that rebuild this architecture (stored with its weights).

        Example:
            >>> WienerStackNet(channels=1, width=8, blocks=2).config()["width"]
            8
        """
        return dict(self._config)

    def _check(self, blurry: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
        blurry, psf = check_inputs(blurry, psf)
        if blurry.dim() != 4 or blurry.shape[1] != self.channels:
            raise ValueError(f"blurry must have shape (B, {self.channels}, H, W) for this {self.channels}-channel "
                             f"network, got shape {tuple(blurry.shape)}")
        return psf[0] if psf.shape[0] == 1 else psf

    def features(self, blurry: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
        """The network input: (B, C * (N + 1), H, W), the N Wiener results of every channel, then the blurry image.

        Example:
            >>> WienerStackNet(channels=1, width=4, blocks=0).features(torch.rand(1, 1, 16, 16),
            ...                                                       torch.ones(3, 3) / 9).shape
            torch.Size([1, 16, 16, 16])
        """
        psf = self._check(blurry, psf)
        stack = wiener_stack(blurry, psf, self.snr_db)
        return torch.cat([stack.flatten(1, 2), blurry], 1)

    def forward(self, blurry: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
        x = self.features(blurry, psf)
        out = self.tail(self.blocks(self.head(x)))
        if self.residual_index is not None:
            start = self.residual_index * self.channels
            out = out + x[:, start:start + self.channels]
        if self.bilateral:
            out = bilateral_filter(out, **self.bilateral_options)
        return out


register_pretrained("wiener-stack-net", WienerStackNet,
                    "paper 001 Wiener-stack CNN, grey (RGB folded into the batch), for method 'wiener-stack-net'")

@register("wiener-stack-net", "paper 001: CNN over 15 Wiener deconvolutions (9-65 dB) + the blurry image (trained)")
def wiener_stack_net(image: torch.Tensor, psf: torch.Tensor, *, bilateral: bool | None = None) -> torch.Tensor:
    """Restore with the shipped :class:`WienerStackNet` (paper 001).

    The shipped network is single-channel; colour channels are restored one by one with the same
    PSF (folded into the batch). It was trained on images in [0, 1] with noise sigma 0.3-1.5 %.

    Args:
        image: (B, C, H, W) float tensor, any C and size (at least the PSF).
        psf: (kh, kw) or (B, kh, kw), odd sizes, centred, summing to 1.
        bilateral: None keeps the shipped setting; True/False switches the output bilateral filter.

    Returns:
        (B, C, H, W) tensor, the image's dtype.

    Raises:
        ValueError: bad shapes, NaN/Inf, a PSF that is even-sized, all zero or larger than the image.
        FileNotFoundError: the weight file is missing from this installation.

    Example:
        >>> import deblur_ops
        >>> y = torch.rand(40, 40)
        >>> deblur_ops.deblur(y, torch.ones(5, 5) / 25, method="wiener-stack-net").shape
        torch.Size([40, 40])
    """
    image, psf = check_inputs(image, psf)
    if image.dim() != 4:
        raise ValueError(f"wiener-stack-net restores 2D images (B, C, H, W), got shape {tuple(image.shape)}")
    if bilateral not in (None, True, False):
        raise ValueError(f"bilateral must be None, True or False, got {bilateral!r}")
    net = cached_model("wiener-stack-net", image.device)
    batch, kernels = fold_channels(image.float(), psf.float(), net.channels)
    previous = net.bilateral
    net.bilateral = previous if bilateral is None else bilateral
    try:
        with torch.no_grad():
            out = net(batch, kernels)
    finally:
        net.bilateral = previous
    return out.reshape(image.shape).to(image.dtype)


@register("wiener-bilateral", "paper 001 baseline: one Wiener filter at the dataset-average SNR + bilateral filter")
def wiener_bilateral(image: torch.Tensor, psf: torch.Tensor, *, snr_db: float = DATASET_SNR_DB,
                     bilateral: bool = True) -> torch.Tensor:
    """Paper 001's baseline (its Fig. 4): Wiener at one fixed SNR for all images, then a bilateral filter.

    The SNR is not tuned per image (the paper's point); its default is the average SNR of the
    training data of the shipped ``wiener-stack-net`` (:data:`DATASET_SNR_DB`). The bilateral
    filter has the paper's parameters (:func:`bilateral_filter` defaults); with several channels
    the colour distance is taken over all of them.

    Args:
        image: (B, C, H, W) float tensor.
        psf: (kh, kw) or (B, kh, kw).
        snr_db: the Wiener filter's SNR in dB (lambda = 10^(-snr/10), identity regulariser).
        bilateral: apply the bilateral filter.

    Returns:
        (B, C, H, W) tensor.

    Raises:
        ValueError: bad shapes or values, non-finite ``snr_db``.

    Example:
        >>> wiener_bilateral(torch.rand(1, 1, 32, 32), torch.ones(5, 5) / 25).shape
        torch.Size([1, 1, 32, 32])
    """
    image, psf = check_inputs(image, psf)
    if image.dim() != 4:
        raise ValueError(f"wiener-bilateral restores 2D images (B, C, H, W), got shape {tuple(image.shape)}")
    if isinstance(snr_db, bool) or not isinstance(snr_db, (int, float)) or not math.isfinite(snr_db):
        raise ValueError(f"snr_db must be a finite number (dB), got {snr_db!r}")
    kernel = psf[0] if psf.shape[0] == 1 else psf
    out = wiener_stack(image, kernel, [float(snr_db)])[:, 0]
    return bilateral_filter(out) if bilateral else out


def dataset_snr_db(data, samples: int = 4096, batch: int = 64) -> float:
    """Mean over ``samples`` training patches of 10 log10(var(k * x) / sigma^2), in dB.

    The signal power of a patch is that of its noise-free blurred image, estimated as
    ``var(blurry) - sigma^2`` (the noise is independent of the image); this is the "average SNR of
    all images in our dataset" that sets paper 001's baseline Wiener filter.

    Args:
        data: a :class:`deblur_ops.train.datasets.SyntheticBlur` (its stream advances).
        samples: number of patches.
        batch: patches drawn at a time.

    Returns:
        The mean SNR in dB.
    """
    values = []
    while len(values) * batch < samples:
        b = data.batch(batch)
        sigma2 = b["sigma"].double() ** 2
        signal = (b["blurry"].double().flatten(1).var(1) - sigma2).clamp_min(1e-12)
        values.append(10 * torch.log10(signal / sigma2))
    return float(torch.cat(values)[:samples].mean())


def train_wiener_stack_net(options) -> dict:
    """Recipe ``deblur train wiener-stack-net``: grey WienerStackNet on :class:`SyntheticBlur` uniform PSFs.

    Defaults (override with the CLI flags and ``--set key=value``): Adam, lr 1e-3 with cosine decay
    to 1e-4, 1200 steps of 8 patches of 64 x 64, noise sigma 0.3-1.5 %, PSFs up to 27 px long in
    29 x 29; ``--set`` keys: width (32), blocks (5), kernel_size (5), loss ("ssim" as the paper,
    or "l2"), residual_snr_db (17; 0 for the paper's plain output), bilateral (0; 1 adds the
    output filter), psf_size, max_length, val_batches. After training it scores the paper's
    baseline (:func:`wiener_bilateral` at the measured dataset-average SNR) on the same
    validation patches and stores everything in the weight file's info.

    Args:
        options: :class:`deblur_ops.train.TrainOptions`.

    Returns:
        The info dict stored with the weights.
    """
    from ..train import SyntheticBlur, fit, psnr_batch, supervised_step, training_info
    from .losses import image_loss
    from .pretrained import save_pretrained

    cfg = options.pop_extra({"width": 32, "blocks": 5, "kernel_size": 5, "loss": "ssim", "residual_snr_db": 17.0,
                             "bilateral": 0, "psf_size": 29, "max_length": 27.0, "val_batches": 4})
    steps, batch_size = options.get("steps", 1200), options.get("batch_size", 8)
    patch, lr = options.get("patch", 64), options.get("lr", 1e-3)
    data_options = {"psf": "uniform", "patch": patch, "psf_size": cfg["psf_size"], "channels": 1,
                    "noise": (0.003, 0.015), "max_length": cfg["max_length"], "images": options.images}
    train_data, val_data = SyntheticBlur.splits(**data_options, seed=options.seed)
    snr = dataset_snr_db(SyntheticBlur(**data_options, seed=options.seed + 1, split="train"))
    torch.manual_seed(options.seed)
    model = WienerStackNet(channels=1, width=cfg["width"], blocks=cfg["blocks"], kernel_size=cfg["kernel_size"],
                           residual_snr_db=cfg["residual_snr_db"] or None, bilateral=bool(cfg["bilateral"]))
    model.to(options.device)
    loss = image_loss(cfg["loss"])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 10)

    def predict(batch):
        return model(batch["blurry"], batch["psf"])

    history = fit(model, supervised_step(model, optimizer, predict, lambda out, b: loss(out, b["sharp"])),
                  predict, train_data, val_data, steps=steps, batch_size=batch_size, optimizers=[optimizer],
                  schedulers=[scheduler], validate_every=options.get("validate_every", 250),
                  val_batches=cfg["val_batches"], checkpoint=options.checkpoint, resume=options.resume,
                  seed=options.seed, progress=options.progress, device=options.device)
    # The same validation patches fit scored (same split and seed), now for the paper's baseline.
    replay = SyntheticBlur(**data_options, seed=options.seed, split="val")
    baseline = []
    with torch.no_grad():
        for _ in range(cfg["val_batches"]):
            b = replay.batch(batch_size)
            baseline.append(psnr_batch(wiener_bilateral(b["blurry"], b["psf"], snr_db=snr), b["sharp"]))
    described = {**data_options, "noise": list(data_options["noise"]),
                 "images": "built-in offline skimage images (training split)" if options.images is None
                 else str(options.images)}
    info = training_info(options, history, described,
                         loss=cfg["loss"], lr=lr, schedule="cosine to lr/10", patch=patch, dataset_snr_db=snr,
                         validation_baseline_psnr=float(torch.cat(baseline).mean()),
                         baseline="wiener-bilateral at dataset_snr_db")
    save_pretrained(model.cpu(), options.out, config=model.config(), info=info, name="wiener-stack-net")
    return info


register_recipe("wiener-stack-net", "paper 001 WienerStackNet (grey; SSIM loss) on synthetic uniform blur",
                train_wiener_stack_net)
