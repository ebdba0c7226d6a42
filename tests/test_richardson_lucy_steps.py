"""Richardson-Lucy's fused element-wise steps against their unfused torch reference and an
independent NumPy oracle: bit-identical to the reference (same operations, same order), on random
shapes, broadcasts, zeros, negatives and NaNs, float64 and float32."""
import numpy as np
import pytest
import torch

from deblur_ops import _extension, reference
from deblur_ops.ops.richardson_lucy_steps import richardson_lucy_ratio_, richardson_lucy_update_

from .conftest import requires_cuda

OP = torch.ops.deblur_ops
needs_extension = pytest.mark.skipif(not _extension.KERNELS["richardson_lucy_update_"],
                                     reason="compiled extension not loaded")
CASES = 200


def random_case(seed: int, dtype, device="cpu"):
    """(blurred, observed, background | None, floor, correction, estimate, factor | None) of a random
    (B, C, *S) shape, 2 or 3 spatial dims, with exact zeros, negatives (FFT rounding) and factors
    per item or shared."""
    gen = torch.Generator().manual_seed(seed)
    nd = 2 + seed % 2
    b, c = (int(v) for v in torch.randint(1, 4, (2,), generator=gen))
    spatial = tuple(int(v) for v in torch.randint(1, 12, (nd,), generator=gen))
    shape = (b, c) + spatial

    def field(lo=-0.1, hi=2.0):
        t = lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)
        t[torch.rand(shape, generator=gen) < 0.1] = 0.0
        return t.to(dtype).to(device)

    floor = float(10 ** (-1 - 6 * torch.rand((), generator=gen, dtype=torch.float64)))
    background = field(0.0, 0.5) if seed % 3 else None
    p = b if seed % 4 == 1 else 1
    factor = None
    if seed % 5:
        factor = torch.rand((p, 1) + spatial, generator=gen, dtype=torch.float64).to(dtype).to(device)
        factor[factor < 0.1] = 0.0
    return field(), field(0.0, 3.0), background, floor, field(), field(0.0, 2.0), factor


def numpy_ratio(h, y, bk, floor):
    d = h if bk is None else h + bk
    return y / np.maximum(d, floor)


def numpy_update(u, x, f):
    c = np.maximum(u, 0)
    return x * (c if f is None else c * f)


@needs_extension
class TestRichardsonLucySteps:
    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    def test_ratio_is_bitwise_the_unfused_reference(self, dtype):
        for seed in range(CASES):
            h, y, bk, floor, *_ = random_case(seed, dtype)
            expected = h.clone()
            reference.richardson_lucy_ratio_(expected, y, bk, floor)
            got = h.clone()
            OP.richardson_lucy_ratio_(got, y, bk, floor)
            torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=f"seed {seed}")

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    def test_update_is_bitwise_the_unfused_reference(self, dtype):
        for seed in range(CASES):
            *_, u, x, f = random_case(seed, dtype)
            expected = u.clone()
            reference.richardson_lucy_update_(expected, x, f)
            got = u.clone()
            OP.richardson_lucy_update_(got, x, f)
            torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=f"seed {seed}")

    def test_both_match_numpy_in_float64(self):
        for seed in range(CASES):
            h, y, bk, floor, u, x, f = random_case(seed, torch.float64)
            expected_ratio = numpy_ratio(h.numpy(), y.numpy(), None if bk is None else bk.numpy(), floor)
            expected_update = numpy_update(u.numpy(), x.numpy(), None if f is None else f.numpy())
            np.testing.assert_allclose(richardson_lucy_ratio_(h, y, bk, floor).numpy(), expected_ratio, rtol=1e-15)
            np.testing.assert_allclose(richardson_lucy_update_(u, x, f).numpy(), expected_update, rtol=1e-15)

    def test_nan_propagates_as_in_clamp(self):
        h = torch.tensor([[[float("nan"), 1.0]]], dtype=torch.float64)
        OP.richardson_lucy_ratio_(h, torch.ones_like(h), None, 1e-3)
        assert h[0, 0, 0].isnan() and h[0, 0, 1] == 1
        u = torch.tensor([[[float("nan"), -1.0]]], dtype=torch.float64)
        OP.richardson_lucy_update_(u, torch.ones_like(u), None)
        assert u[0, 0, 0].isnan() and u[0, 0, 1] == 0

    def test_wrapper_falls_back_for_broadcast_and_strided_inputs(self):
        h = torch.rand(2, 1, 5, 6, dtype=torch.float64)
        y = torch.rand(1, 1, 5, 6, dtype=torch.float64).expand(2, 1, 5, 6)  # not contiguous
        expected = h.clone()
        reference.richardson_lucy_ratio_(expected, y, None, 1e-3)
        torch.testing.assert_close(richardson_lucy_ratio_(h, y, None, 1e-3), expected, rtol=0, atol=0)

    @pytest.mark.parametrize("kwargs, match", [
        (dict(observed=torch.ones(1, 1, 4, 5)), "observed must have the shape of blurred"),
        (dict(observed=torch.ones(1, 1, 4, 4, dtype=torch.float64)), "observed must have dtype"),
        (dict(blurred=torch.ones(1, 1, 4, 8)[..., ::2]), "blurred is written in place and must be contiguous"),
    ])
    def test_ratio_errors_name_the_argument(self, kwargs, match):
        args = dict(blurred=torch.ones(1, 1, 4, 4), observed=torch.ones(1, 1, 4, 4))
        args.update(kwargs)
        with pytest.raises(RuntimeError, match=match):
            OP.richardson_lucy_ratio_(args["blurred"], args["observed"], None, 1e-3)

    def test_update_rejects_a_factor_of_another_batch(self):
        with pytest.raises(RuntimeError, match=r"factor must have shape \(P, 1, \*S\) with P = 1 or 2"):
            OP.richardson_lucy_update_(torch.ones(2, 1, 4, 4), torch.ones(2, 1, 4, 4), torch.ones(3, 1, 4, 4))

    def test_opcheck(self):
        h, y, bk, floor, u, x, f = random_case(4, torch.float64)
        torch.library.opcheck(OP.richardson_lucy_ratio_, (h, y, bk, floor))
        torch.library.opcheck(OP.richardson_lucy_update_, (u, x, f))

    @requires_cuda
    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    def test_cuda_kernels_match_the_cpu(self, dtype):
        for seed in range(CASES):
            h, y, bk, floor, u, x, f = random_case(seed, dtype)
            cuda = [None if t is None else t.cuda() for t in (h, y, bk, u, x, f)]
            OP.richardson_lucy_ratio_(cuda[0], cuda[1], cuda[2], floor)
            OP.richardson_lucy_update_(cuda[3], cuda[4], cuda[5])
            OP.richardson_lucy_ratio_(h, y, bk, floor)
            OP.richardson_lucy_update_(u, x, f)
            torch.testing.assert_close(cuda[0].cpu(), h, rtol=0, atol=0)
            torch.testing.assert_close(cuda[3].cpu(), u, rtol=0, atol=0)
