"""Microscope PSFs with aberrations from the refractive-index mismatch (Gibson–Lanni), via ``psfmodels``.

The models are those of ``psfmodels`` (Talley Lambert's package, a port of F. Aguet's code): the
scalar model of S. F. Gibson and F. Lanni, "Experimental test of an analytical model of aberration
in an oil-immersion objective lens used in three-dimensional light microscopy", JOSA A 8(10), 1991,
and the vectorial model of F. Aguet et al., Optics Express 17(8), 2009. This module only renames
the parameters for microscopists, checks them, and returns the package's convention (sum 1,
odd sizes, focal plane at index D // 2).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..validation import positive_float
from .prepare import voxel_size_tuple

__all__ = ["gibson_lanni_psf"]

_MODELS = ("scalar", "vectorial")


def gibson_lanni_psf(shape, voxel_size, *, wavelength_um: float = 0.52, na: float = 1.4,
                     immersion_ri: float = 1.515, sample_ri: float = 1.33, coverslip_ri: float = 1.515,
                     coverslip_thickness_um: float = 170.0, working_distance_um: float = 150.0,
                     depth_um: float = 0.0, model: str = "scalar", confocal: bool = False,
                     pinhole_au: float = 1.0, excitation_wavelength_um: float | None = None,
                     oversample: int = 3, dtype=torch.float32) -> torch.Tensor:
    """Widefield or confocal PSF of an objective imaging into a sample of another refractive index.

    The objective is used as designed (immersion medium, coverslip and working distance at their
    design values); the aberration comes from the sample's index and the depth of the point
    below the coverslip: with ``sample_ri != immersion_ri`` and ``depth_um > 0`` the PSF becomes
    axially asymmetric and its peak moves away from the nominal focal plane (the focal shift), as
    a measured bead deep in a watery sample under an oil objective shows. Planes are at the
    nominal focus positions ``depth_um + (k - D // 2) * dz``; the PSF is not re-centred on its peak
    (use :func:`deblur_ops.psf.prepare_psf` with ``center="peak"`` for that).

    A confocal PSF is the excitation PSF times the emission PSF convolved (laterally) with the
    pinhole, a disc of ``pinhole_au`` Airy units (1 AU = 1.22 wavelength / NA), computed by
    ``psfmodels.confocal_psf``.

    Args:
        shape: odd (D, H, W) or (H, W) (one plane at the focus); H and W may differ.
        voxel_size: (dz, dy, dx) in µm ((dy, dx) for 2D); dy must equal dx (the model is sampled
            on a square lateral grid).
        wavelength_um: emission wavelength, µm.
        na: numerical aperture, < ``immersion_ri``.
        immersion_ri: refractive index of the immersion medium (oil 1.515, water 1.333).
        sample_ri: refractive index of the sample (cells ~1.33-1.38, mounting media 1.4-1.52).
        coverslip_ri: refractive index of the coverslip (1.515 for #1.5 glass).
        coverslip_thickness_um: coverslip thickness, µm (170 for #1.5).
        working_distance_um: design thickness of the immersion layer, µm.
        depth_um: depth of the point source below the coverslip, µm (0: on the coverslip).
        model: ``"scalar"`` (Gibson–Lanni) or ``"vectorial"`` (Aguet et al.; high NA, polarisation).
        confocal: compute the confocal (point-scanning, pinhole) PSF instead of the widefield one.
        pinhole_au: pinhole diameter in Airy units (confocal only).
        excitation_wavelength_um: excitation wavelength for the confocal PSF, µm (default: the
            emission wavelength).
        oversample: sub-pixel samples per lateral axis (pixel integration), >= 1.
        dtype: floating dtype of the result.

    Returns:
        (D, H, W) or (H, W) tensor summing to 1.

    Raises:
        ValueError: even or bad sizes, non-positive values, a negative depth, na >= immersion_ri,
            dy != dx, an unknown model.

    Example:
        >>> p = gibson_lanni_psf((9, 15, 15), (0.2, 0.1, 0.1), na=1.2, depth_um=5.0)
        >>> p.shape, round(float(p.sum()), 5)
        (torch.Size([9, 15, 15]), 1.0)
    """
    import psfmodels

    try:
        sizes = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (D, H, W) or (H, W) odd integers, got {shape!r}") from None
    if len(sizes) not in (2, 3) or any(s < 1 or s % 2 == 0 for s in sizes) or sizes != tuple(shape):
        raise ValueError(f"shape must be (D, H, W) or (H, W) of odd positive integers (centre at size // 2), "
                         f"got {shape!r}")
    voxels = voxel_size_tuple(voxel_size, len(sizes))
    if not math.isclose(voxels[-1], voxels[-2], rel_tol=1e-9):
        raise ValueError(f"voxel_size must have dy == dx for this model, got {voxel_size!r}; resample the "
                         f"image or the PSF (deblur_ops.psf.resample_psf) to square pixels")
    if model not in _MODELS:
        raise ValueError(f"model must be one of {_MODELS}, got {model!r}")
    wavelength = positive_float(wavelength_um, "wavelength_um")
    na = positive_float(na, "na")
    ni = positive_float(immersion_ri, "immersion_ri")
    ns = positive_float(sample_ri, "sample_ri")
    ng = positive_float(coverslip_ri, "coverslip_ri")
    tg = positive_float(coverslip_thickness_um, "coverslip_thickness_um")
    ti0 = positive_float(working_distance_um, "working_distance_um")
    depth = float(depth_um)
    if not (math.isfinite(depth) and depth >= 0):
        raise ValueError(f"depth_um must be >= 0 (below the coverslip), got {depth_um!r}")
    if na >= ni:
        raise ValueError(f"na must be smaller than immersion_ri ({ni}), got na={na}")
    if isinstance(oversample, bool) or int(oversample) != oversample or oversample < 1:
        raise ValueError(f"oversample must be an integer >= 1, got {oversample!r}")
    depth_planes = sizes[0] if len(sizes) == 3 else 1
    dz = voxels[0] if len(sizes) == 3 else 0.1
    nx = max(sizes[-2:])
    common = dict(dxy=voxels[-1], dz=dz, pz=depth, NA=na, ns=ns, ni=ni, ni0=ni, tg=tg, tg0=tg, ng=ng, ng0=ng,
                  ti0=ti0, oversample_factor=int(oversample), normalize=False, model=model)
    if confocal:
        pinhole = positive_float(pinhole_au, "pinhole_au")
        excitation = wavelength if excitation_wavelength_um is None else positive_float(
            excitation_wavelength_um, "excitation_wavelength_um")
        psf = psfmodels.confocal_psf(depth_planes, nx, pinhole_au=pinhole, ex_wvl=excitation, em_wvl=wavelength,
                                     **common)
    else:
        psf = psfmodels.make_psf(depth_planes, nx, wvl=wavelength, **common)
    psf = np.asarray(psf, dtype=np.float64)
    top, left = (nx - sizes[-2]) // 2, (nx - sizes[-1]) // 2
    psf = psf[:, top:top + sizes[-2], left:left + sizes[-1]]
    if len(sizes) == 2:
        psf = psf[0]
    t = torch.from_numpy(np.ascontiguousarray(psf)).clamp(min=0)
    return (t / t.sum()).to(dtype)
