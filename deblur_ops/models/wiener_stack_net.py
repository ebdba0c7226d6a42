"""Paper 001: a CNN that non-linearly combines a stack of Wiener deconvolutions (``WienerStackNet``).

The blurry image is deconvolved with 15 Wiener filters of assumed SNRs 9, 13, ..., 65 dB (one
fused :func:`deblur_ops.wiener_stack` call); the 15 results and the blurry image are stacked as
channels (16 per colour channel, 48 for RGB) and fed to a first convolution, a configurable number
of residual blocks (conv-ReLU-conv with a skip; 64 channels, 5x5 kernels, 12 blocks in the paper)
and a final convolution back to the image channels, optionally followed by a bilateral filter
(window 7, sigma_color 40 of 255, sigma_space 10 in the paper;
:func:`deblur_ops.restore.baselines.bilateral_filter`).

Registered method: ``"wiener-stack-net"`` (the shipped trained network); the paper's baseline, one
Wiener filter at the dataset-average SNR plus the same bilateral filter, is ``"wiener-bilateral"``
in :mod:`deblur_ops.restore.baselines`. Pretrained name: ``"wiener-stack-net"``; training:
``deblur train wiener-stack-net`` (:mod:`deblur_ops.train.wiener_stack_net`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..ops import wiener_stack
from ..reference import DEFAULT_SNR_DB
from ..restore.baselines import BILATERAL_SIGMA_COLOR, BILATERAL_SIGMA_SPACE, BILATERAL_WINDOW, bilateral_filter
from ..restore.registry import register
from ..validation import check_image_2d, check_inputs, positive_int
from ._channels import fold_channels
from .methods import cached_model

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
        snr_db: SNRs (dB) of the Wiener filters (paper 001 §1.2: 9, 13, ..., 65,
            :data:`deblur_ops.reference.DEFAULT_SNR_DB`).
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

    References:
        A. Gilbert, S. Messinger, A. Patel. Non-Blind Image Deblurring using Neural Networks. Course project report,
        year not stated (paper 001 in docs/references.md).
    """

    def __init__(self, channels: int = 3, width: int = 64, blocks: int = 12, kernel_size: int = 5,
                 snr_db: Sequence[float] = DEFAULT_SNR_DB, residual_snr_db: float | None = None,
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

    References:
        A. Gilbert, S. Messinger, A. Patel. Non-Blind Image Deblurring using Neural Networks. Course project report,
        year not stated (paper 001 in docs/references.md).
    """
    image, psf = check_inputs(image, psf)
    check_image_2d(image, "wiener-stack-net")
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
