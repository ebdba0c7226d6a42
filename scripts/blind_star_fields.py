"""Blind PSFs of star fields: the point-source estimate against the edge estimate (docs/methods.md).

Simulated 256 x 256 fields (deblur_ops.data.scenes.astronomy_field: 120 stars, 12 galaxies, uniform
Moffat seeing of each FWHM, sky and read noise), each PSF estimated with estimate_psf(source="points")
and (source="edges"), compared with the true PSF (normalised correlation on 31 x 31) and used by 30
Richardson-Lucy iterations; PSNR on the range of the clean scene's 99.5th percentile, 20 px border
left out. Then fields of `deblur evaluate --protocol astronomy` (seeing varying over a 3 x 3 grid, FWHM
3-6 px): method blind with one PSF from the stars, with a 3 x 3 PSF grid from them (psf_grid), and
sv_richardson_lucy with the true grid, scored as that protocol scores (PSNR on [0, 1], full-range PSNR,
median photometry error in 5 x 5 apertures at the stars). Writes Markdown to stdout, or to --save DIR
as <date>_<device>_blind_star_fields.md.
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
    lines += ["", "| protocol field | stars used (grid) | observed | blind, one PSF | blind, psf_grid=3x3 | "
              "sv_richardson_lucy, true grid |", "|---|---:|---|---|---|---|"]
    from deblur_ops.apps.evaluate import _astronomy_scene
    from deblur_ops.psf import psf_grid_from_point_sources
    from skimage.metrics import peak_signal_noise_ratio

    for shape, seed in (((192, 192), 11), ((256, 256), 3), ((256, 256), 4)):
        scene = _astronomy_scene(shape, seed)
        observed, clean = scene["observed"].astype(np.float32), scene["clean"]

        def scores(x):
            raw = np.asarray(x, np.float64)
            boxes = [(slice(max(0, r - 2), r + 3), slice(max(0, c - 2), c + 3)) for r, c in scene["stars"]]
            photometry = np.median([abs(raw[b].sum() - clean[b].sum()) / clean[b].sum() for b in boxes])
            return (f"{peak_signal_noise_ratio(np.clip(clean, 0, 1), np.clip(raw, 0, 1), data_range=1):.2f} / "
                    f"{peak_signal_noise_ratio(clean, raw, data_range=float(clean.max())):.2f} / {photometry:.3f}")

        used = len(psf_grid_from_point_sources(observed, SIDE, (3, 3))[2].used)
        lines.append(f"| {shape[0]}x{shape[1]}, seed {seed} | {used} | {scores(observed)} | "
                     f"{scores(deblur(observed, method='blind', psf_size=SIDE))} | "
                     f"{scores(deblur(observed, method='blind', psf_size=SIDE, psf_grid='3x3'))} | "
                     f"{scores(deblur(observed, scene['grid'], method='sv_richardson_lucy'))} |")
    lines += ["", "Each cell of the second table: PSNR (dB) / full-range PSNR (dB) / photometry error."]
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
