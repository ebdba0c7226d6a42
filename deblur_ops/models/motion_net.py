"""Motion-Net (paper 004 §3.1): per-pixel linear motion regressed by a fully convolutional network.

DeepLab-style: a strided convolutional encoder to 1/4 resolution, dilated residual blocks, atrous
spatial pyramid pooling (dilations 1, 2, 4, 8 and image-level pooling) and a 1 x 1 head with three
outputs per pixel, bilinearly upsampled to the input size. Instance normalisation throughout (the
paper trains on single full images). The outputs are the motion length in pixels, in
[1, max_length], and the direction as (cos 2 theta, sin 2 theta), so that 0 and 180 degrees — the
same blur line — are the same target.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import validation as v


NORMS = ("instance", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True) if kind == "instance" else nn.Identity()


def _block(cin: int, cout: int, norm: str, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=norm == "none"),
                         _norm(norm, cout), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, width: int, dilation: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(_block(width, width, norm, dilation=dilation),
                                  nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=norm == "none"),
                                  _norm(norm, width))

    def forward(self, x):
        return F.relu(x + self.body(x))


class _ASPP(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str, rates=(1, 2, 4, 8)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cout, 1, bias=norm == "none"), _norm(norm, cout), nn.ReLU(inplace=True))
            if r == 1 else _block(cin, cout, norm, dilation=r) for r in rates)
        self.pool = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(nn.Conv2d(cout * (len(rates) + 1), cout, 1, bias=norm == "none"),
                                     _norm(norm, cout), nn.ReLU(inplace=True))

    def forward(self, x):
        pooled = self.pool(x.mean((-2, -1), keepdim=True)).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], 1))


class MotionNet(nn.Module):
    """Fully convolutional regressor: blurry image -> per-pixel linear motion (length, angle).

    Args:
        width: channels of the first layer (the encoder doubles it twice).
        max_length: longest motion in pixels it can predict.
        blocks: dilated residual blocks at 1/4 resolution.
        norm: ``"none"`` (default) or ``"instance"`` (the paper's). Instance norm rescales every
            feature map to unit variance, which removes the relative energy of differently oriented
            responses — the very cue of a blur's direction and length; without it the regressor
            learns the direction of a uniform motion within a few hundred steps, with it not in 300.
        smoothing: odd window in pixels (0: none) of the box filter, applied twice, with which
            :meth:`motion` smooths the per-pixel estimates (as motion vectors l (cos 2 theta,
            sin 2 theta) and lengths) before anyone deblurs with them. Camera-motion fields are
            smooth; the raw estimates vary from pixel to pixel, and IRC-Net deblurring with such a
            field lost 5 dB against the blurred input on held-out patches (24.65 against 29.59 dB;
            smoothed 29.10 dB at 17 px, motion MSE 9.83 -> 9.61). :meth:`forward` stays per pixel
            (the training target).

    Example:
        >>> import torch
        >>> net = MotionNet(width=8)
        >>> length, angle = net.motion(torch.rand(1, 1, 30, 42))
        >>> length.shape, bool((length >= 1).all()), bool(((angle >= 0) & (angle < 180)).all())
        (torch.Size([1, 30, 42]), True, True)

    References:
        T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
        Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
    """

    def __init__(self, width: int = 24, max_length: float = 35.0, blocks: int = 2, norm: str = "none",
                 smoothing: int = 17):
        super().__init__()
        if isinstance(width, bool) or int(width) != width or width < 2:
            raise ValueError(f"width must be an integer >= 2, got {width!r}")
        if not (math.isfinite(max_length) and max_length > 1):
            raise ValueError(f"max_length must be > 1 pixel, got {max_length!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if isinstance(smoothing, bool) or int(smoothing) != smoothing or smoothing < 0 or (smoothing and smoothing % 2 == 0):
            raise ValueError(f"smoothing must be 0 (none) or an odd window in pixels, got {smoothing!r}")
        w = int(width)
        self.width, self.max_length, self.blocks, self.norm = w, float(max_length), int(blocks), norm
        self.smoothing = int(smoothing)
        self.encoder = nn.Sequential(_block(1, w, norm), _block(w, 2 * w, norm, stride=2),
                                     _block(2 * w, 4 * w, norm, stride=2),
                                     *[_Residual(4 * w, 2 ** (i + 1), norm) for i in range(int(blocks))])
        self.aspp = _ASPP(4 * w, 4 * w, norm)
        self.head = nn.Conv2d(4 * w, 3, 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(length (B, H, W) in pixels, direction (B, 2, H, W) = unit (cos 2 theta, sin 2 theta)).

        Colour images are averaged to grey; each image is normalised to zero mean and unit
        standard deviation first, so the scale of the intensities does not matter.
        """
        v.require_tensor(image, "image")
        if image.dim() != 4 or image.shape[1] not in (1, 3):
            raise ValueError(f"image must have shape (B, 1 or 3, H, W), got {tuple(image.shape)}")
        if min(image.shape[-2:]) < 8:
            raise ValueError(f"MotionNet needs images of at least 8x8 pixels, got {tuple(image.shape[-2:])}")
        x = image.mean(1, keepdim=True)
        x = (x - x.mean((-2, -1), keepdim=True)) / (x.std((-2, -1), keepdim=True) + 1e-3)
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        out = self.head(self.aspp(self.encoder(x)))
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)[..., :h, :w]
        length = 1 + (self.max_length - 1) * torch.sigmoid(out[:, 0])
        direction = out[:, 1:] / out[:, 1:].norm(dim=1, keepdim=True).clamp(min=1e-6)
        return length, direction

    def motion(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(length, angle) maps (B, H, W): pixels and degrees in [0, 180)."""
        length, direction = self(image)
        if self.smoothing:
            length, direction = smooth_motion(length, direction, self.smoothing)
        return length, direction_to_angle(direction)

    def config(self) -> dict:
        return {"width": self.width, "max_length": self.max_length, "blocks": self.blocks, "norm": self.norm,
                "smoothing": self.smoothing}


def smooth_motion(length: torch.Tensor, direction: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel motion (length (B, H, W), direction (B, 2, H, W) as (cos 2 theta, sin 2 theta))
    smoothed by a ``window`` px box filter applied twice (a triangle of twice the width), borders
    averaged over the pixels inside the image; differentiable.

    The direction is averaged as the motion vector l (cos 2 theta, sin 2 theta), so long motions
    weigh more and opposite blur lines (0 and 180 degrees) agree; the length is averaged on its own
    (averaging vectors of diverse directions would shorten it).

    Example:
        >>> import torch
        >>> length = torch.full((1, 9, 9), 5.0)
        >>> direction = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1).expand(1, 2, 9, 9)
        >>> l, d = smooth_motion(length, direction, 3)
        >>> bool(torch.allclose(l, length)), bool(torch.allclose(d, direction))
        (True, True)
    """
    vectors = torch.cat([length[:, None], length[:, None] * direction], 1)
    for _ in range(2):
        vectors = F.avg_pool2d(vectors, window, 1, window // 2, count_include_pad=False)
    mixed = vectors[:, 1:]
    return vectors[:, 0], mixed / mixed.norm(dim=1, keepdim=True).clamp(min=1e-6)


def direction_to_angle(direction: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) (cos 2 theta, sin 2 theta) -> theta in degrees, [0, 180)."""
    return torch.rad2deg(torch.atan2(direction[:, 1], direction[:, 0]) / 2).remainder(180)


def angle_to_direction(angle: torch.Tensor) -> torch.Tensor:
    """theta in degrees (B, H, W) -> (B, 2, H, W) (cos 2 theta, sin 2 theta)."""
    doubled = torch.deg2rad(angle) * 2
    return torch.stack([torch.cos(doubled), torch.sin(doubled)], 1)


def motion_loss(length: torch.Tensor, direction: torch.Tensor, true_length: torch.Tensor,
                true_angle: torch.Tensor) -> torch.Tensor:
    """Training loss, the small-error form of :func:`motion_mse`: (l - l')^2 + (l^2 / 4) |d - d'|^2, halved.

    With d = (cos 2 theta, sin 2 theta), |d - d'|^2 ~ 4 (theta - theta')^2, so the second term is the
    squared displacement error along the arc, l^2 (theta - theta')^2.
    """
    target = angle_to_direction(true_angle)
    return 0.5 * ((length - true_length) ** 2 + 0.25 * true_length ** 2 * ((direction - target) ** 2).sum(1)).mean()


def motion_mse(length: torch.Tensor, angle: torch.Tensor, true_length: torch.Tensor, true_angle: torch.Tensor
               ) -> torch.Tensor:
    """Motion MSE of paper 004 Table 2 (the metric of Sun et al. 2015), per image (B,).

    A motion m = (l cos theta, l sin theta) and its opposite blur alike, so each pixel counts the
    closer of the two: mean over pixels of min(|m' - m|^2, |m' + m|^2) / 2 (the average of the two
    components' squared errors).

    Example:
        >>> import torch
        >>> l, a = torch.full((1, 2, 2), 10.0), torch.full((1, 2, 2), 179.0)
        >>> round(float(motion_mse(l, a, l, torch.full((1, 2, 2), 1.0))), 4)
        0.0609
    """
    for name, t in (("length", length), ("angle", angle), ("true_length", true_length), ("true_angle", true_angle)):
        if not isinstance(t, torch.Tensor) or t.shape != length.shape:
            raise ValueError(f"{name} must be a tensor of shape {tuple(length.shape)}, got "
                             f"{tuple(getattr(t, 'shape', ()))}")

    def vec(l, a):
        r = torch.deg2rad(a)
        return l * torch.cos(r), l * torch.sin(r)

    u, w = vec(length, angle)
    tu, tw = vec(true_length, true_angle)
    err = torch.minimum((u - tu) ** 2 + (w - tw) ** 2, (u + tu) ** 2 + (w + tw) ** 2) / 2
    return err.flatten(1).mean(1)
