"""The blind protocol of ``deblur evaluate --blind``: unknown camera shake, held-out images.

Each case is a held-out picture (:data:`deblur_ops.train.datasets.EVALUATION_IMAGES`, never used
for training or tuning) blurred by a Boracchi–Foi camera-shake kernel (:func:`shake_kernel`, sides
11–35 px) without any boundary assumption (the interior of a blurred larger crop, as
:func:`deblur_ops.apps.evaluate.degrade` does), plus white Gaussian noise of 1 % of the range.

Reported per blind method (they see the observation only; ``blind`` is told the kernel's side,
as in Levin et al.'s and Pan et al.'s protocols), and for ``irc-net`` given the true kernel:
PSNR / SSIM on [0, 1] over the interior (a border of the kernel's side left out) after the
restoration's best integer shift within +-3 px (a blind kernel, hence its restoration, is only
defined up to a translation; a 1 px shift alone costs a sharp restoration ~10 dB), seconds, and
Levin et al.'s error ratio: the sum of squared errors of the restoration with the estimated kernel
over that of the same non-blind method (``irc-net``) with the true kernel, each after the best
integer shift within +-3 px (a blind kernel is defined up to a translation), with the fraction of
cases under 3.

Reference: A. Levin, Y. Weiss, F. Durand, W. T. Freeman. Understanding and evaluating blind
deconvolution algorithms. CVPR 2009 (error ratio, "under 3" threshold).
"""
from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .. import psf as psf_lib
from ..api import deblur
from ..validation import integer_at_least
from .evaluate import _scores, degrade, parse_method, save_protocol

BLIND_SIDES = (11, 15, 19, 23, 27, 31, 35)
BLIND_IMAGES = ("camera", "astronaut", "coins", "chelsea", "rocket")
BLIND_METHODS = ("blind", "blind-irc", "autoencoder", "madn")
BLIND_NOISE = 0.01
BLIND_SIZE = 255
# Error ratios are compared after the best integer shift within this many pixels.
MAX_SHIFT = 3


def shake_kernel(side: int, seed: int, *, span: bool = False) -> torch.Tensor:
    """A Boracchi–Foi camera-shake kernel on a ``side`` x ``side`` support.

    The trajectory (:func:`deblur_ops.psf.camera_shake_trajectory`, path length 1.5 ``side``) is
    shrunk, if needed, so that its larger extent is at most ``side - 3`` pixels, and rasterised for
    the full exposure with its centre of mass at the centre. The model's pull back to the origin
    keeps many of these kernels compact (3–23 px across on supports of 11–35 px). With ``span`` the
    trajectory is instead scaled, up or down, so that its farthest sample lies ``side // 2 - 1`` px
    from its mean: the kernel spans its support, as the recorded camera shake of Levin et al. (2009)
    spans theirs.

    Example:
        >>> k = shake_kernel(15, 0)
        >>> tuple(k.shape), round(float(k.sum()), 6)
        ((15, 15), 1.0)
        >>> rows, cols = np.nonzero(shake_kernel(15, 0, span=True).numpy())
        >>> bool(max(np.ptp(rows), np.ptp(cols)) >= 7)
        True
    """
    side = integer_at_least(side, "side", 5)
    if side % 2 == 0:
        raise ValueError(f"side must be odd, got {side}")
    trajectory = psf_lib.camera_shake_trajectory(1000, 1.5 * side, seed=seed)
    if span:
        reach = float((trajectory - trajectory.mean(0)).abs().max())
        trajectory = trajectory * ((side // 2 - 1) / reach)
    else:
        extent = float((trajectory.max(0).values - trajectory.min(0).values).max())
        if extent > side - 3:  # bilinear splatting needs one pixel of room on each side of the path
            trajectory = trajectory * ((side - 3) / extent)
        # Rasterised about its centre of mass, a lopsided path can still reach past the support's
        # edge: shrunk to fit (the kernels that fitted before are unchanged).
        reach = float((trajectory - trajectory.mean(0)).abs().max())
        if reach > side // 2:
            trajectory = trajectory * ((side // 2) * (1 - 1e-9) / reach)
    kernel = psf_lib.camera_shake_psfs(trajectory, side, (1.0,), center=False)[0].double()
    return (kernel / kernel.sum()).float()


def aligned_sse(estimate: np.ndarray, clean: np.ndarray, border: int, max_shift: int = MAX_SHIFT) -> float:
    """Smallest sum of squared errors over integer shifts of ``estimate`` within ``max_shift`` px,
    on the interior of ``clean`` (``border`` px left out on each side).

    Example:
        >>> a = np.zeros((20, 20)); a[10, 10] = 1
        >>> aligned_sse(np.roll(a, 2, 0), a, 4)
        0.0
    """
    return _best_shift(estimate, clean, border, max_shift)[1]


def _best_shift(estimate: np.ndarray, clean: np.ndarray, border: int, max_shift: int = MAX_SHIFT):
    """(shift, SSE) of the integer shift of ``estimate`` within ``max_shift`` px closest to ``clean``'s interior."""
    inner = (slice(border, clean.shape[0] - border), slice(border, clean.shape[1] - border))
    best = ((0, 0), np.inf)
    for dr in range(-max_shift, max_shift + 1):
        for dc in range(-max_shift, max_shift + 1):
            sse = float(((np.roll(estimate, (dr, dc), (0, 1))[inner] - clean[inner]) ** 2).sum())
            if sse < best[1]:
                best = ((dr, dc), sse)
    return best


def _aligned_scores(estimate: np.ndarray, clean: np.ndarray, border: int) -> dict:
    """PSNR and SSIM on the interior of ``estimate`` moved by its best integer shift (see :func:`aligned_sse`)."""
    estimate = np.clip(estimate, 0, 1)
    inner = (slice(border, clean.shape[0] - border), slice(border, clean.shape[1] - border))
    best = _best_shift(estimate, clean, border)[0]
    psnr, ssim = _scores(np.roll(estimate, best, (0, 1))[inner], clean[inner])
    return {"psnr": psnr, "ssim": ssim, "shift": list(best)}


def evaluate_blind(methods: Sequence[str] = BLIND_METHODS, images: Sequence[str] = BLIND_IMAGES,
                   sides: Sequence[int] = BLIND_SIDES, *, noise: float = BLIND_NOISE, size: int = BLIND_SIZE,
                   seed: int = 0, span: bool = False, device: str = "cpu", progress=None) -> dict:
    """Run the blind protocol (see the module docstring).

    Args:
        methods: blind methods (``deblur_ops.methods()`` entries that need no PSF), each optionally
            with parameters as ``"name:key=value,..."`` (e.g. ``"blind:nonblind=irc-net"``).
        images: sample image names (the held-out evaluation images by default).
        sides: kernel sides in pixels (odd).
        noise: Gaussian noise sigma on [0, 1] images.
        size: side of the square test crops.
        seed: kernels use seeds ``seed * 1000 + case index``; the noise the same.
        span: kernels that span their support (:func:`shake_kernel`'s ``span``).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``.
        progress: optional ``progress(done, total)``.

    Returns:
        Report with ``protocol``, ``results`` (one row per case: method, image, side, psnr, ssim,
        seconds, error_ratio) and ``summary`` (per method means and the fraction of ratios < 3).
    """
    from ..restore import METHODS
    from .bench import device_name

    parsed = {}
    for spec in methods:
        name, params = parse_method(spec)
        if name not in METHODS or METHODS[name].needs_psf:
            raise ValueError(f"{name!r} is not a blind method; blind methods: "
                             f"{sorted(n for n, m in METHODS.items() if not m.needs_psf)}")
        parsed[spec] = (name, params)
    size = integer_at_least(size, "size", 48)
    rows = []
    cases = [(image, side) for image in images for side in sides]
    for index, (image, side) in enumerate(cases):
        case_seed = seed * 1000 + index
        kernel = shake_kernel(side, case_seed, span=span)
        clean, observed = degrade(image, kernel, noise, size, case_seed)
        border = side
        start = time.perf_counter()
        reference = deblur(observed, kernel.numpy(), method="irc-net", device=device)
        elapsed = time.perf_counter() - start
        reference_sse = aligned_sse(np.clip(reference, 0, 1), clean, border)
        base = {"image": image, "side": side, "seed": case_seed}
        rows.append({**base, "method": "blurred", **_aligned_scores(observed, clean, border), "seconds": 0.0,
                     "error_ratio": None})
        rows.append({**base, "method": "irc-net (true kernel)", **_aligned_scores(reference, clean, border),
                     "seconds": elapsed, "error_ratio": 1.0})
        for method, (name, given) in parsed.items():
            params = {"psf_size": side, **given} if name == "blind" else dict(given)
            start = time.perf_counter()
            estimate = deblur(observed, None, method=name, device=device, **params)
            elapsed = time.perf_counter() - start
            ratio = aligned_sse(np.clip(estimate, 0, 1), clean, border) / max(reference_sse, 1e-12)
            rows.append({**base, "method": method, **_aligned_scores(estimate, clean, border), "seconds": elapsed,
                         "error_ratio": ratio})
        if progress is not None:
            progress(index + 1, len(cases))
    return {"protocol": {"name": "blind_span" if span else "blind", "images": list(images), "sides": [int(s) for s in sides], "span": bool(span),
                         "noise": float(noise), "size": size, "seed": seed, "methods": list(methods),
                         "device": device_name(torch.device(device if device != "auto" else "cpu")),
                         "threads": torch.get_num_threads(), "date": datetime.date.today().isoformat(),
                         "torch": torch.__version__},
            "results": rows, "summary": summarize(rows)}


def summarize(rows: list[dict]) -> list[dict]:
    """Per method: mean PSNR, SSIM, gain over the blurred input, seconds, fraction of error ratios < 3."""
    blurred = {(r["image"], r["side"]): r["psnr"] for r in rows if r["method"] == "blurred"}
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        ratios = [r["error_ratio"] for r in mine if r["error_ratio"] is not None]
        out.append({"method": method, "cases": len(mine),
                    "psnr": float(np.mean([r["psnr"] for r in mine])),
                    "ssim": float(np.mean([r["ssim"] for r in mine])),
                    "gain": float(np.mean([r["psnr"] - blurred[(r["image"], r["side"])] for r in mine])),
                    "seconds": float(np.mean([r["seconds"] for r in mine])),
                    "median_ratio": float(np.median(ratios)) if ratios else None,
                    "under_3": float(np.mean([x < 3 for x in ratios])) if ratios else None})
    return out


def blind_markdown(report: dict) -> str:
    """The blind report: the per-method summary, then every case."""
    p = report["protocol"]
    lines = [f"# deblur evaluate --blind ({p['date']}, {p['device']}, {p['threads']} threads, torch {p['torch']})", "",
             f"Held-out images {', '.join(p['images'])} ({p['size']}x{p['size']}), Boracchi-Foi camera-shake kernels "
             f"of sides {', '.join(map(str, p['sides']))} px"
             f"{' scaled to span their support' if p.get('span') else ''}, noise {p['noise']:g}, seed {p['seed']}. Scores on the "
             f"interior (a border of the kernel's side left out), each restoration at its best integer shift within "
             f"+-{MAX_SHIFT} px. Error ratio: SSE of the method over SSE of irc-net "
             f"with the true kernel, each at its best integer shift within +-{MAX_SHIFT} px.", "",
             "| method | PSNR (dB) | gain over blurred (dB) | SSIM | median error ratio | ratio < 3 | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s in report["summary"]:
        ratio = "" if s["median_ratio"] is None else f"{s['median_ratio']:.2f}"
        under = "" if s["under_3"] is None else f"{100 * s['under_3']:.0f} %"
        lines.append(f"| {s['method']} | {s['psnr']:.2f} | {s['gain']:+.2f} | {s['ssim']:.3f} | {ratio} | {under} | "
                     f"{s['seconds']:.2f} |")
    lines += ["", "Per case (PSNR dB / error ratio):", "",
              "| image | side | " + " | ".join(s["method"] for s in report["summary"]) + " |",
              "|---|---:|" + "---:|" * len(report["summary"])]
    cases = dict.fromkeys((r["image"], r["side"]) for r in report["results"])
    for image, side in cases:
        cells = []
        for s in report["summary"]:
            r = next(r for r in report["results"] if (r["image"], r["side"], r["method"]) == (image, side, s["method"]))
            cells.append(f"{r['psnr']:.2f}" + ("" if r["error_ratio"] is None else f" / {r['error_ratio']:.2f}"))
        lines.append(f"| {image} | {side} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save_blind(report: dict, directory) -> list[Path]:
    """Write ``<date>_<device>_evaluate_blind.json`` and ``.md`` into ``directory``."""
    return save_protocol(report, directory, blind_markdown)
