"""Image-quality metrics."""
from __future__ import annotations

import math

import torch


def psnr(estimate: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / MSE)."""
    if estimate.shape != reference.shape:
        raise ValueError(f"shapes differ: estimate {tuple(estimate.shape)} vs reference {tuple(reference.shape)}")
    mse = torch.mean((estimate.double() - reference.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)
