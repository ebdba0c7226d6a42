"""Robustness campaign: seeded random valid inputs against the pure-PyTorch references, and bad
input that must raise a named error (the message names the offending argument).

One section per op. Every valid case draws its own shapes, dtype and options from a generator
seeded with the case number, so a failure names a reproducible case. Shapes are small: the whole
file runs in well under a minute on two cores.
"""
from __future__ import annotations

import re

import pytest
import torch

import deblur_ops
from deblur_ops import _extension
from deblur_ops import reference as ref

OP = torch.ops.deblur_ops
TOLERANCE = {torch.float64: {"rtol": 1e-9, "atol": 1e-9}, torch.float32: {"rtol": 2e-4, "atol": 2e-4}}


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _int(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _choice(g: torch.Generator, options):
    return options[_int(g, 0, len(options) - 1)]


def _odd(g: torch.Generator, limit: int) -> int:
    """Odd size in [1, limit] (limit >= 1)."""
    return 2 * _int(g, 0, (limit - 1) // 2) + 1


def _check_grads(fn_op, fn_ref, leaves, dtype, case):
    """Forward and all first-order gradients of fn_op equal those of fn_ref."""
    leaves_op = [t.detach().clone().requires_grad_() for t in leaves]
    leaves_ref = [t.detach().clone().requires_grad_() for t in leaves]
    y_op, y_ref = fn_op(*leaves_op), fn_ref(*leaves_ref)
    torch.testing.assert_close(y_op, y_ref, **TOLERANCE[dtype], msg=lambda m: f"case {case}: {m}")
    u = torch.randn(y_ref.shape, generator=_rng(case), dtype=dtype)
    for a, b in zip(torch.autograd.grad(y_op, leaves_op, u), torch.autograd.grad(y_ref, leaves_ref, u)):
        torch.testing.assert_close(a, b, **TOLERANCE[dtype], msg=lambda m: f"case {case} grad: {m}")


def _expect_named_error(call, error, name, pattern):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert name in message, f"the message does not name {name!r}: {message}"
    assert re.search(pattern, message), f"{pattern!r} not in: {message}"


# ----------------------------------------------------------------------------------------------
# wiener_stack
# ----------------------------------------------------------------------------------------------
WIENER_CASES = 100


@pytest.mark.parametrize("case", range(WIENER_CASES))
def test_wiener_stack_random_case_matches_reference(case):
    g = _rng(case)
    nd = 3 if case % 4 == 3 else 2
    dtype = torch.float32 if case % 5 == 0 else torch.float64
    batch, channels = _int(g, 1, 2), _int(g, 1, 2)
    spatial = [_int(g, 3, 6 if nd == 3 else 12) for _ in range(nd)]
    ksize = [_odd(g, n) for n in spatial]
    psf_shape = ([batch] if _int(g, 0, 1) else []) + ksize
    psf = torch.rand(psf_shape, generator=g, dtype=dtype) + 0.01
    image = torch.randn([batch, channels] + spatial, generator=g, dtype=dtype)
    snr = (torch.rand(_int(g, 1, 3), generator=g, dtype=torch.float64) * 80 - 10).tolist()
    options = {"regularizer": _choice(g, ref.REGULARIZERS), "padding": _choice(g, ("reflect", "edge_taper", "circular"))}
    _check_grads(lambda x: deblur_ops.wiener_stack(x, psf, snr, **options),
                 lambda x: ref.wiener_stack(x, psf, snr, **options), [image], dtype, case)


IMAGE, PSF = torch.rand(1, 1, 8, 8), torch.ones(3, 3) / 9
WIENER_BAD = {
    "image 3-D": (lambda: deblur_ops.wiener_stack(IMAGE[0], PSF), ValueError, "image", r"must have shape"),
    "image int": (lambda: deblur_ops.wiener_stack(IMAGE.int(), PSF), ValueError, "image", "float32 or float64"),
    "image NaN": (lambda: deblur_ops.wiener_stack(IMAGE.clone().fill_(float("nan")), PSF), ValueError,
                  "image", "NaN or Inf"),
    "image empty": (lambda: deblur_ops.wiener_stack(IMAGE[:0], PSF), ValueError, "image", "empty"),
    "image list": (lambda: deblur_ops.wiener_stack(IMAGE.tolist(), PSF), TypeError, "image", "torch.Tensor"),
    "psf int": (lambda: deblur_ops.wiener_stack(IMAGE, PSF.int()), ValueError, "psf", "float32 or float64"),
    "psf 1-D": (lambda: deblur_ops.wiener_stack(IMAGE, PSF[0]), ValueError, "psf", "must have shape"),
    "psf even": (lambda: deblur_ops.wiener_stack(IMAGE, torch.ones(4, 3)), ValueError, "psf", "odd"),
    "psf empty": (lambda: deblur_ops.wiener_stack(IMAGE, torch.ones(0, 3)), ValueError, "psf", "odd"),
    "psf NaN": (lambda: deblur_ops.wiener_stack(IMAGE, PSF.clone().fill_(float("nan"))), ValueError, "psf",
                "NaN or Inf"),
    "psf sum 0": (lambda: deblur_ops.wiener_stack(IMAGE, torch.tensor([[0.0, 0, 0], [1, 0, -1], [0, 0, 0]])),
                  ValueError, "psf", "positive, finite sum"),
    "psf too large": (lambda: deblur_ops.wiener_stack(IMAGE, torch.ones(9, 9)), ValueError, "psf",
                      "larger than the image"),
    "snr_db NaN": (lambda: deblur_ops.wiener_stack(IMAGE, PSF, [float("nan")]), ValueError, "snr_db",
                   "NaN or Inf"),
    "snr_db 2-D": (lambda: deblur_ops.wiener_stack(IMAGE, PSF, [[1.0]]), ValueError, "snr_db", "1-D"),
    "padding": (lambda: deblur_ops.wiener_stack(IMAGE, PSF, padding="wrap"), ValueError, "padding", "one of"),
    "op psf even": (lambda: OP.wiener_stack(IMAGE, torch.ones(1, 4, 3), torch.ones(2), "identity"),
                    RuntimeError, "psf", "odd"),
}


@pytest.mark.parametrize("name", WIENER_BAD)
def test_wiener_stack_bad_input_raises_named_error(name):
    call, error, argument, pattern = WIENER_BAD[name]
    if name.startswith("op ") and not _extension.KERNELS["wiener_stack"]:
        pytest.skip("compiled extension not loaded")
    _expect_named_error(call, error, argument, pattern)


# ----------------------------------------------------------------------------------------------
# learnable_shrink
# ----------------------------------------------------------------------------------------------
SHRINK_CASES = 120


@pytest.mark.parametrize("case", range(SHRINK_CASES))
def test_learnable_shrink_random_case_matches_reference(case):
    g = _rng(10_000 + case)
    dtype = torch.float32 if case % 3 == 0 else torch.float64
    shape = [_int(g, 1, 2), _int(g, 1, 3)] + [_int(g, 1, 7) for _ in range(_int(g, 0, 2))]
    n = _int(g, 2, 20)
    lo = float(torch.rand((), generator=g, dtype=torch.float64)) * 4 - 3
    hi = lo + 0.1 + float(torch.rand((), generator=g, dtype=torch.float64)) * 5
    # x covers the range and both sides of it, where the slope-1 continuation applies.
    x = lo - 1 + torch.rand(shape, generator=g, dtype=dtype) * (hi - lo + 2)
    values = torch.randn(shape[1], n, generator=g, dtype=dtype)
    _check_grads(lambda a, v: deblur_ops.learnable_shrink(a, v, (lo, hi)),
                 lambda a, v: ref.learnable_shrink(a, v, (lo, hi)), [x, values], dtype, case)


X, VALUES = torch.rand(2, 3, 4), torch.rand(3, 5)
SHRINK_BAD = {
    "x 1-D": (lambda: deblur_ops.learnable_shrink(X[0, 0], VALUES, (-1, 1)), ValueError, "x", "must have shape"),
    "x int": (lambda: deblur_ops.learnable_shrink(X.int(), VALUES, (-1, 1)), ValueError, "x", "float32 or float64"),
    "x NaN": (lambda: deblur_ops.learnable_shrink(X.clone().fill_(float("nan")), VALUES, (-1, 1)), ValueError,
              "x", "NaN or Inf"),
    "x list": (lambda: deblur_ops.learnable_shrink(X.tolist(), VALUES, (-1, 1)), TypeError, "x", "torch.Tensor"),
    "values shape": (lambda: deblur_ops.learnable_shrink(X, VALUES[:2], (-1, 1)), ValueError, "values",
                     "must have shape"),
    "values empty": (lambda: deblur_ops.learnable_shrink(X, VALUES[:, :0], (-1, 1)), ValueError, "values",
                     "must have shape"),
    "values dtype": (lambda: deblur_ops.learnable_shrink(X, VALUES.double(), (-1, 1)), ValueError, "values",
                     "dtype"),
    "values NaN": (lambda: deblur_ops.learnable_shrink(X, VALUES.clone().fill_(float("nan")), (-1, 1)),
                   ValueError, "values", "NaN or Inf"),
    "range inverted": (lambda: deblur_ops.learnable_shrink(X, VALUES, (1, -1)), ValueError, "value_range",
                       "xmin < xmax"),
    "range NaN": (lambda: deblur_ops.learnable_shrink(X, VALUES, (float("nan"), 1)), ValueError,
                  "value_range", "finite"),
    "range overflows float32": (lambda: deblur_ops.learnable_shrink(X, VALUES, (-1e38, 3e38)), ValueError,
                                "value_range", "not representable"),
    "op range overflows float32": (lambda: OP.learnable_shrink(X, VALUES, -1e38, 3e38), RuntimeError,
                                   "value_range", "not representable"),
    "op x half": (lambda: OP.learnable_shrink(X.half(), VALUES.half(), -1.0, 1.0), RuntimeError, "x",
                  "float32 or float64"),
}


@pytest.mark.parametrize("name", SHRINK_BAD)
def test_learnable_shrink_bad_input_raises_named_error(name):
    call, error, argument, pattern = SHRINK_BAD[name]
    if name.startswith("op ") and not _extension.KERNELS["learnable_shrink"]:
        pytest.skip("compiled extension not loaded")
    _expect_named_error(call, error, argument, pattern)


def test_learnable_shrink_empty_input_gives_empty_output_and_gradients():
    x, values = torch.rand(0, 3, 4, requires_grad=True), torch.rand(3, 5, requires_grad=True)
    y = deblur_ops.learnable_shrink(x, values, (-1, 1))
    gx, gv = torch.autograd.grad(y.sum(), (x, values))
    assert y.shape == x.shape and gx.shape == x.shape and torch.equal(gv, torch.zeros(3, 5))


# ----------------------------------------------------------------------------------------------
# nu_conv
# ----------------------------------------------------------------------------------------------
NU_CONV_CASES = 120


@pytest.mark.parametrize("case", range(NU_CONV_CASES))
def test_nu_conv_random_case_matches_reference(case):
    g = _rng(20_000 + case)
    dtype = torch.float32 if case % 4 == 0 else torch.float64
    B, C, H, W = _int(g, 1, 3), _int(g, 1, 2), _int(g, 1, 8), _int(g, 1, 8)
    K, F = _int(g, 1, 3), _int(g, 1, 4)
    kh, kw = _odd(g, 7), _odd(g, 7)
    # idx and weights broadcast over the batch independently.
    idx = torch.randint(0, F, (_choice(g, (1, B)), K, H, W), generator=g)
    if case % 2:
        idx = idx.int()
    weights = torch.rand(_choice(g, (1, B)), K, H, W, generator=g, dtype=dtype)
    x = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    bank = torch.randn(F, kh, kw, generator=g, dtype=dtype)
    mode, padding = _choice(g, ref.NU_CONV_MODES), _choice(g, ref.NU_CONV_PADDINGS)
    _check_grads(lambda a, b, w: deblur_ops.nu_conv(a, b, idx, w, mode=mode, padding=padding),
                 lambda a, b, w: ref.nu_conv_core(a, b, idx, w, mode, padding),
                 [x, bank, weights], dtype, case)


XN, BANK = torch.rand(2, 1, 6, 6), torch.rand(3, 3, 3)
IDX, WEIGHTS = torch.zeros(2, 2, 6, 6, dtype=torch.long), torch.rand(2, 2, 6, 6)
NU_CONV_BAD = {
    "x 3-D": (lambda: deblur_ops.nu_conv(XN[0], BANK, IDX, WEIGHTS), ValueError, "x", "must have shape"),
    "x int": (lambda: deblur_ops.nu_conv(XN.int(), BANK, IDX, WEIGHTS), ValueError, "x", "float32 or float64"),
    "x empty": (lambda: deblur_ops.nu_conv(XN[:, :0], BANK, IDX, WEIGHTS), ValueError, "x", "empty"),
    "x list": (lambda: deblur_ops.nu_conv(XN.tolist(), BANK, IDX, WEIGHTS), TypeError, "x", "torch.Tensor"),
    "bank 2-D": (lambda: deblur_ops.nu_conv(XN, BANK[0], IDX, WEIGHTS), ValueError, "bank", "must have shape"),
    "bank empty": (lambda: deblur_ops.nu_conv(XN, BANK[:0], IDX, WEIGHTS), ValueError, "bank", "F >= 1"),
    "bank even": (lambda: deblur_ops.nu_conv(XN, torch.rand(3, 4, 3), IDX, WEIGHTS), ValueError, "bank", "odd"),
    "bank dtype": (lambda: deblur_ops.nu_conv(XN, BANK.double(), IDX, WEIGHTS), ValueError, "bank", "dtype"),
    "bank NaN": (lambda: deblur_ops.nu_conv(XN, BANK.clone().fill_(float("nan")), IDX, WEIGHTS), ValueError,
                 "bank", "NaN or Inf"),
    "idx float": (lambda: deblur_ops.nu_conv(XN, BANK, IDX.float(), WEIGHTS), ValueError, "idx", "int32 or int64"),
    "idx negative": (lambda: deblur_ops.nu_conv(XN, BANK, IDX - 1, WEIGHTS), ValueError, "idx", r"\[0, 2\]"),
    "idx too large": (lambda: deblur_ops.nu_conv(XN, BANK, IDX + 3, WEIGHTS), ValueError, "idx", r"\[0, 2\]"),
    "idx batch": (lambda: deblur_ops.nu_conv(XN, BANK, IDX.new_zeros(3, 2, 6, 6), WEIGHTS), ValueError, "idx",
                  r"\(B or 1, K, H, W\)"),
    "weights size": (lambda: deblur_ops.nu_conv(XN, BANK, IDX, WEIGHTS[..., :5]), ValueError, "weights",
                     r"\(B or 1, K, H, W\)"),
    "weights K": (lambda: deblur_ops.nu_conv(XN, BANK, IDX, WEIGHTS[:, :1]), ValueError, "weights", "same K"),
    "weights dtype": (lambda: deblur_ops.nu_conv(XN, BANK, IDX, WEIGHTS.double()), ValueError, "weights",
                      "dtype"),
    "weights NaN": (lambda: deblur_ops.nu_conv(XN, BANK, IDX, WEIGHTS.clone().fill_(float("nan"))), ValueError,
                    "weights", "NaN or Inf"),
    "mode": (lambda: deblur_ops.nu_conv(XN, BANK, IDX, WEIGHTS, mode="valid"), ValueError, "mode", "one of"),
    "padding": (lambda: deblur_ops.nu_conv(XN, BANK, IDX, WEIGHTS, padding="mirror"), ValueError, "padding",
                "one of"),
    "op idx too large": (lambda: OP.nu_conv(XN, BANK, IDX + 3, WEIGHTS, "gather", "zeros"), RuntimeError, "idx",
                         r"\[0, 2\]"),
    "op weights K": (lambda: OP.nu_conv(XN, BANK, IDX, WEIGHTS[:, :1], "gather", "zeros"), RuntimeError,
                     "weights", "same K"),
    "op bank even": (lambda: OP.nu_conv(XN, torch.rand(3, 4, 3), IDX, WEIGHTS, "gather", "zeros"), RuntimeError,
                     "bank", "odd"),
}


@pytest.mark.parametrize("name", NU_CONV_BAD)
def test_nu_conv_bad_input_raises_named_error(name):
    call, error, argument, pattern = NU_CONV_BAD[name]
    if name.startswith("op ") and not _extension.KERNELS["nu_conv"]:
        pytest.skip("compiled extension not loaded")
    _expect_named_error(call, error, argument, pattern)


# --- deblur(): every method on NaN, tiny, huge-valued and negative inputs --------------------------------

# admm_tv and nu_cg are not among them: their default TV weight grows with the square root of the noise
# level, so the same picture in other units gets another prior strength (a known limit, see the README).
SCALE_EQUIVARIANT = ("wiener", "richardson_lucy")


def test_every_method_names_nan_and_never_returns_nan(small_models):
    import warnings

    import numpy as np

    from deblur_ops.api import METHODS
    from deblur_ops.psf import linear_motion_kernel

    rng = np.random.default_rng(0)
    image = rng.random((32, 32)).astype(np.float32)
    psf = linear_motion_kernel(5, 30).numpy()
    with_nan = image.copy()
    with_nan[3, 4] = np.nan
    for name in deblur_ops.methods():
        kernel = psf if METHODS[name].needs_psf else None
        with pytest.raises(ValueError, match="image contains 1 NaN"):
            deblur_ops.deblur(with_nan, kernel, method=name, device="cpu")
        for case in (image * np.float32(1e30), image - 0.5, image[:4, :4].copy()):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # a 5x5 PSF on a 4x4 image is cropped
                    out = deblur_ops.deblur(case, kernel, method=name, device="cpu")
            except ValueError as error:  # the networks need 16x16: a named refusal is fine
                assert "at least 16x16" in str(error), (name, str(error))
                continue
            assert out.shape == case.shape and np.isfinite(out).all(), name
    for name in SCALE_EQUIVARIANT:  # linear in the data (RL: homogeneous): a huge image is the same problem
        small = deblur_ops.deblur(image, psf, method=name, device="cpu")
        huge = deblur_ops.deblur(image * np.float32(1e30), psf, method=name, device="cpu")
        np.testing.assert_allclose(huge / np.float32(1e30), small, rtol=2e-3, atol=2e-3 * np.abs(small).max(),
                                   err_msg=name)
