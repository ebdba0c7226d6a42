"""Blind PSFs of star fields: the point-source estimate against the edge estimate (docs/methods.md).

Simulated 256 x 256 fields (deblur_ops.data.scenes.astronomy_field: 120 stars, 12 galaxies, uniform
Moffat seeing of each FWHM, sky and read noise), each PSF estimated with estimate_psf(source="points")
and (source="edges"), compared with the true PSF (normalised correlation on 31 x 31) and used by 30
Richardson-Lucy iterations; PSNR on the range of the clean scene's 99.5th percentile, 20 px border
left out. Writes a Markdown table to stdout, or to --save DIR as <date>_<device>_blind_star_fields.md.
"""
from __future__ import annotations

import argparse
import datetime
import math
import time
from pathlib import Path

import numpy as np
import torch

from deblur_ops import deblur, estimate_psf
from deblur_ops.apps.bench import device_name
from deblur_ops.data.scenes import astronomy_field

CASES = ((21, 2.5), (22, 4.0), (23, 6.0), (24, 8.0))  # (seed, FWHM in px)
SIDE = 31


def _ncc(a, b) -> float:
    a, b = np.asarray(a, np.float64) - np.mean(a), np.asarray(b, np.float64) - np.mean(b)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="folder for the Markdown report")
    args = parser.parse_args()
    lines = ["| FWHM (px) | PSF correlation: stars / edges | estimate (s): stars / edges | blurred | RL, true PSF | "
             "RL, stars' PSF | RL, edges' PSF |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for seed, fwhm in CASES:
        field = astronomy_field((256, 256), (1, 1), stars=120, galaxies=12, fwhm_range=(fwhm, fwhm), seed=seed)
        observed, clean = field.blurred.astype(np.float32), field.clean
        true = np.pad(np.asarray(field.psf[0, 0], np.float64), max(0, (SIDE - field.psf.shape[-1]) // 2))
        c = true.shape[-1] // 2
        true = true[c - SIDE // 2:c + SIDE // 2 + 1, c - SIDE // 2:c + SIDE // 2 + 1]
        true = (true / true.sum()).astype(np.float32)
        scale = np.percentile(clean[clean > 0], 99.5)

        def psnr(x):
            err = (np.clip(x / scale, 0, 1) - np.clip(clean / scale, 0, 1))[20:-20, 20:-20]
            return 10 * math.log10(1 / float((err ** 2).mean()))

        kernels, seconds = {}, {}
        for source in ("points", "edges"):
            start = time.perf_counter()
            kernels[source] = estimate_psf(observed, SIDE, source=source)
            seconds[source] = time.perf_counter() - start
        rl = {name: psnr(deblur(observed, k, method="richardson_lucy"))
              for name, k in (("true", true), *kernels.items())}
        lines.append(f"| {fwhm:g} | {_ncc(kernels['points'], true):.3f} / {_ncc(kernels['edges'], true):.3f} | "
                     f"{seconds['points']:.2f} / {seconds['edges']:.1f} | {psnr(observed):.2f} | {rl['true']:.2f} | "
                     f"{rl['points']:.2f} | {rl['edges']:.2f} |")
    device = device_name(torch.device("cpu"))
    text = "\n".join([f"# Blind PSFs of star fields ({datetime.date.today().isoformat()}, {device}, "
                      f"torch {torch.__version__})", "", __doc__.split("\n\n")[1].replace("\n", " "), "", *lines]) + "\n"
    print(text)
    if args.save:
        slug = device.split(" (")[0].lower().replace(" ", "-")
        path = args.save / f"{datetime.date.today().isoformat()}_{slug}_blind_star_fields.md"
        path.write_text(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
