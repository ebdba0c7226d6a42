"""`deblur demo`: blur a built-in image with a known motion PSF plus noise, restore it, report PSNR.

The restoration uses ``DEFAULT_METHOD`` through :func:`deblur_ops.deblur`, the best method the
package has on the demo's setting and on the evaluation protocol (see below). As a baseline the
demo also reports the fused Wiener stack of paper 001 over 15 SNRs, with the member chosen without
the ground truth by the least expected error under a power-law image prior, for a noise level
estimated from the blurred image itself.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import data
from ..data import degrade, metrics, noise
from ..api import deblur, methods
from ..ops import wiener_stack
from ..psf import linear_motion_kernel
from ..reference import DEFAULT_SNR_DB


# The best method available on the demo's setting and on the evaluation protocol: the learned
# IRC-Net with the shipped irc-motion weights (benchmarks/results/2026-11-21_evaluate_table1_irc_net_grid.md:
# 27.28 dB; the untrained irc 26.56, nu_cg 26.41, rgdm 25.87, admm_tv 25.31). On the default demo,
# astronaut 512 RGB with a 21 px motion: irc-net 26.58 dB in 1.7 s, irc 25.47 dB in 0.4 s,
# rgdm 24.85 dB in 41 s.
DEFAULT_METHOD = "irc-net"


@dataclass
class DemoResult:
    method: str
    image: str
    psf_length: float
    psf_angle: float
    noise_sigma: float
    estimated_sigma: float
    chosen_snr_db: float
    psnr_blurred: float
    psnr_restored: float
    psnr_wiener_stack: float
    psnr_best_in_stack: float
    best_snr_db: float
    seconds: float
    output: str | None
    psnr_per_snr: dict = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"image            {self.image}, motion blur {self.psf_length:g} px at {self.psf_angle:g} deg, "
            f"noise sigma {self.noise_sigma:g}",
            f"method           {self.method} (estimated noise sigma {self.estimated_sigma:.4f})",
            f"PSNR blurred     {self.psnr_blurred:6.2f} dB",
            f"PSNR restored    {self.psnr_restored:6.2f} dB  ({self.psnr_restored - self.psnr_blurred:+.2f} dB, "
            f"{self.seconds:.2f} s)",
            f"baseline         {self.psnr_wiener_stack:6.2f} dB  wiener_stack ({len(self.psnr_per_snr)} SNRs), "
            f"SNR {self.chosen_snr_db:g} dB picked by expected error; best member {self.psnr_best_in_stack:.2f} dB "
            f"at {self.best_snr_db:g} dB (needs the ground truth)",
        ]
        if self.output:
            lines.append(f"wrote            {self.output}  (sharp | blurred | restored)")
        return "\n".join(lines)


def run_demo(image: str = "astronaut", *, method: str = DEFAULT_METHOD, length: float = 21,
             angle: float = 30, noise_sigma: float = 0.01, size: int | None = 512, seed: int = 0,
             output: str | Path | None = "deblur_demo.png", device: str = "cpu") -> DemoResult:
    """Run the demo and return its numbers (and write the side-by-side PNG if ``output``)."""
    if method not in methods():
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(methods())}")
    sharp = data.to_batch(data.sample_image(image, size=size)).to(device)
    psf = linear_motion_kernel(length, angle).to(device)
    blurred = degrade.add_gaussian_noise(degrade.blur(sharp, psf), noise_sigma, seed=seed)

    start = time.perf_counter()
    restored = data.to_batch(deblur(data.from_batch(blurred), psf.cpu().numpy(), method=method,
                                    device=device)).to(sharp.device)
    seconds = time.perf_counter() - start

    stack = wiener_stack(blurred, psf)
    sigma = noise.estimate_noise_sigma(blurred)
    chosen = int(noise.select_wiener_snr(blurred, psf, DEFAULT_SNR_DB, sigma)[0])

    per_snr = {snr: metrics.psnr(stack[:, j].clamp(0, 1), sharp) for j, snr in enumerate(DEFAULT_SNR_DB)}
    best_snr = max(per_snr, key=per_snr.get)
    written = None
    if output:
        panels = [data.from_batch(t.clamp(0, 1)) for t in (sharp, blurred, restored)]
        side_by_side = np.concatenate(panels, axis=1)
        import imageio.v3 as iio

        iio.imwrite(output, (side_by_side * 255 + 0.5).astype(np.uint8))
        written = str(output)
    return DemoResult(
        method=method, image=image, psf_length=length, psf_angle=angle, noise_sigma=noise_sigma,
        estimated_sigma=float(sigma.mean()), chosen_snr_db=float(DEFAULT_SNR_DB[chosen]),
        psnr_blurred=metrics.psnr(blurred.clamp(0, 1), sharp),
        psnr_restored=metrics.psnr(restored.clamp(0, 1), sharp),
        psnr_wiener_stack=per_snr[DEFAULT_SNR_DB[chosen]],
        psnr_best_in_stack=per_snr[best_snr], best_snr_db=float(best_snr), seconds=seconds,
        output=written, psnr_per_snr=per_snr,
    )
