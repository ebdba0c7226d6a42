"""Blind deblurring (paper 004 §3.3, eq. 18): Motion-Net -> motion weights -> IRC-Net, end to end."""
from __future__ import annotations

import torch
from torch import nn

from .irc_net import IRCNet
from .motion_net import MotionNet


class BlindIRC(nn.Module):
    """Motion-Net predicts each pixel's linear motion; its interpolation weights on IRC-Net's motion
    bank (differentiable in the motion) select the local blur and inverse filters, so the gradient of
    the restoration loss reaches Motion-Net (eq. 18).

    Args:
        motion: keyword arguments of :class:`MotionNet`.
        irc: keyword arguments of :class:`IRCNet`.

    Example:
        >>> import torch
        >>> net = BlindIRC(motion={"width": 4, "max_length": 5.0}, irc={"stages": 1, "inner_steps": 1, "max_length": 5})
        >>> net(torch.rand(1, 1, 24, 24)).shape
        torch.Size([1, 1, 24, 24])

    References:
        T. Eboli, J. Sun, J. Ponce. Neural Embedding of an Iterative Deconvolution Algorithm for Motion Blur
        Estimation and Removal. Preprint hal-01857177, 2018 (paper 004 in docs/references.md).
    """

    def __init__(self, motion: dict | None = None, irc: dict | None = None):
        super().__init__()
        self.motion_net = MotionNet(**(motion or {}))
        self.irc = IRCNet(**(irc or {}))

    def forward(self, image: torch.Tensor, noise_sigma=None) -> torch.Tensor:
        """Restore ``image`` (B, C, H, W) without a PSF."""
        return self.irc(image, motion=self.motion_net.motion(image), noise_sigma=noise_sigma)

    def config(self) -> dict:
        return {"motion": self.motion_net.config(), "irc": self.irc.config()}

    @classmethod
    def from_parts(cls, motion_net: MotionNet, irc: IRCNet) -> "BlindIRC":
        """The pipeline from a trained MotionNet and IRCNet (weights copied)."""
        model = cls(motion_net.config(), irc.config())
        model.motion_net.load_state_dict(motion_net.state_dict())
        model.irc.load_state_dict(irc.state_dict())
        return model
