"""NU-Conv: kernels vs the pure-PyTorch reference, vs scipy, adjointness, gradients, errors."""
import itertools

import numpy as np
import pytest
import scipy.signal
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import deblur_ops
from deblur_ops import _extension
from deblur_ops import reference as ref

from .conftest import requires_cuda

MODES = ref.NU_CONV_MODES
HALF_NAMES = {torch.float16: "Half", torch.bfloat16: "BFloat16"}  # as c10 prints them
PADDINGS = ref.NU_CONV_PADDINGS
needs_ext = pytest.mark.skipif(not _extension.has_kernel("nu_conv", torch.device("cpu")),
                               reason="compiled CPU kernel not built")


def make(B, C, H, W, K, F, kh, kw, Bf=None, dtype=torch.float64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    Bf = B if Bf is None else Bf
    x = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    bank = torch.randn(F, kh, kw, generator=g, dtype=dtype)
    idx = torch.randint(0, F, (Bf, K, H, W), generator=g)
    w = torch.rand(Bf, K, H, W, generator=g, dtype=dtype)
    return [t.to(device) for t in (x, bank, idx, w)]


SHAPES = [  # B, C, H, W, K, F, kh, kw, Bf
    (2, 3, 9, 12, 2, 3, 5, 3, 1),
    (1, 1, 7, 5, 1, 2, 9, 11, 1),  # filter larger than the image
    (2, 2, 6, 8, 4, 5, 3, 7, 2),
    (1, 3, 4, 4, 3, 4, 1, 1, 1),
    (3, 1, 13, 11, 4, 6, 7, 5, 3),
]


@needs_ext
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode,padding", list(itertools.product(MODES, PADDINGS)))
def test_forward_and_backward_match_reference(shape, mode, padding):
    x, bank, idx, w = make(*shape)
    y = deblur_ops.nu_conv(x, bank, idx, w, mode=mode, padding=padding)
    torch.testing.assert_close(y, ref.nu_conv(x, bank, idx, w, mode=mode, padding=padding))
    leaves = [t.clone().requires_grad_() for t in (x, bank, w)]
    u = torch.randn_like(x)
    got = torch.autograd.grad(
        deblur_ops.nu_conv(leaves[0], leaves[1], idx, leaves[2], mode=mode, padding=padding),
        leaves, u)
    want = torch.autograd.grad(
        ref.nu_conv_core(leaves[0], leaves[1], idx, leaves[2], mode, padding), leaves, u)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@needs_ext
def test_float32_and_int32_idx():
    x, bank, idx, w = make(2, 2, 10, 9, 4, 5, 7, 7, dtype=torch.float32)
    for mode in MODES:
        y = deblur_ops.nu_conv(x, bank, idx.int(), w, mode=mode, padding="reflect")
        want = ref.nu_conv(x.double(), bank.double(), idx, w.double(), mode=mode, padding="reflect")
        torch.testing.assert_close(y, want.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ksize", [(1, 1), (3, 5), (7, 3)])
def test_uniform_field_equals_scipy_convolve(mode, ksize):
    x, bank, _, _ = make(2, 2, 11, 9, 1, 1, *ksize)
    idx = torch.zeros(1, 1, 11, 9, dtype=torch.long)
    w = torch.ones(1, 1, 11, 9, dtype=torch.float64)
    want = np.stack([[scipy.signal.convolve(x[b, c].numpy(), bank[0].numpy(), "same")
                      for c in range(2)] for b in range(2)])
    for fn in (deblur_ops.nu_conv, ref.nu_conv):
        y = fn(x, bank, idx, w, mode=mode, padding="zeros")
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", ["reflect", "replicate", "circular"])
def test_uniform_field_paddings_equal_padded_scipy(padding):
    x, bank, _, _ = make(1, 1, 8, 10, 1, 1, 5, 3)
    idx = torch.zeros(1, 1, 8, 10, dtype=torch.long)
    w = torch.ones(1, 1, 8, 10, dtype=torch.float64)
    np_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[padding]
    padded = np.pad(x[0, 0].numpy(), ((2, 2), (1, 1)), mode=np_mode)
    want = scipy.signal.convolve(padded, bank[0].numpy(), "valid")
    for mode in MODES:
        y = deblur_ops.nu_conv(x, bank, idx, w, mode=mode, padding=padding)
        np.testing.assert_allclose(y[0, 0].numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_scatter_is_adjoint_of_gather_with_flipped_filters(shape):
    x, bank, idx, w = make(*shape)
    u = torch.randn_like(x)
    flipped = bank.flip(-2, -1)
    for fn in (deblur_ops.nu_conv, ref.nu_conv):
        ax = fn(x, bank, idx, w, mode="gather")
        atu = fn(u, flipped, idx, w, mode="scatter")
        lhs, rhs = float((ax * u).sum()), float((x * atu).sum())
        assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))
        sx = fn(x, bank, idx, w, mode="scatter")
        stu = fn(u, flipped, idx, w, mode="gather")
        assert abs(float((sx * u).sum()) - float((x * stu).sum())) <= 1e-12 * max(1.0, abs(lhs))


@pytest.mark.parametrize("mode,padding", list(itertools.product(MODES, PADDINGS)))
def test_gradcheck(mode, padding):
    x, bank, idx, w = make(2, 2, 5, 4, 2, 3, 3, 5, Bf=1)
    inputs = (x.requires_grad_(), bank.requires_grad_(), idx, w.requires_grad_())
    fn = lambda a, b, i, c: deblur_ops.nu_conv(a, b, i, c, mode=mode, padding=padding)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)


@needs_ext
@pytest.mark.parametrize("mode,padding", [("gather", "zeros"), ("scatter", "reflect")])
def test_opcheck(mode, padding):
    x, bank, idx, w = make(2, 2, 6, 5, 2, 3, 3, 3, Bf=1)
    args = (x.requires_grad_(), bank.requires_grad_(), idx, w.requires_grad_(), mode, padding)
    torch.library.opcheck(torch.ops.deblur_ops.nu_conv.default, args)
    grad = torch.randn_like(x)
    torch.library.opcheck(torch.ops.deblur_ops.nu_conv_backward.default,
                          (grad, x.detach(), bank.detach(), idx, w.detach(), mode, padding,
                           [True, True, True]))


def test_torch_compile_fullgraph():
    x, bank, idx, w = make(1, 2, 8, 8, 2, 3, 3, 3, dtype=torch.float32)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(x, bank, idx, w):
        return deblur_ops.nu_conv(x, bank, idx, w, mode="scatter", padding="replicate") * 2

    torch.testing.assert_close(
        f(x, bank, idx, w), 2 * ref.nu_conv(x, bank, idx, w, mode="scatter", padding="replicate"))


@needs_ext
@settings(max_examples=200, deadline=None)
@given(B=st.integers(1, 2), C=st.integers(1, 3), H=st.integers(1, 9), W=st.integers(1, 9),
       K=st.integers(1, 4), F=st.integers(1, 5), kh=st.integers(0, 17), kw=st.integers(0, 17),
       shared=st.booleans(), mode=st.sampled_from(MODES), padding=st.sampled_from(PADDINGS),
       seed=st.integers(0, 2**16))
def test_property_matches_reference(B, C, H, W, K, F, kh, kw, shared, mode, padding, seed):
    x, bank, idx, w = make(B, C, H, W, K, F, 2 * kh + 1, 2 * kw + 1, Bf=1 if shared else B,
                           seed=seed)
    y = deblur_ops.nu_conv(x, bank, idx, w, mode=mode, padding=padding)
    torch.testing.assert_close(y, ref.nu_conv(x, bank, idx, w, mode=mode, padding=padding))


def test_bad_inputs_raise_clear_errors():
    x, bank, idx, w = make(1, 1, 6, 6, 2, 3, 3, 3)
    with pytest.raises(ValueError, match=r"idx values must lie in \[0, 2\]"):
        deblur_ops.nu_conv(x, bank, idx + 3, w)
    with pytest.raises(ValueError, match="idx must be int32 or int64"):
        deblur_ops.nu_conv(x, bank, idx.float(), w)
    with pytest.raises(ValueError, match="odd"):
        deblur_ops.nu_conv(x, torch.randn(3, 4, 3, dtype=x.dtype), idx, w)
    with pytest.raises(ValueError, match=r"weights must have shape \(B or 1, K, H, W\)"):
        deblur_ops.nu_conv(x, bank, idx, w[..., :5])
    with pytest.raises(ValueError, match="same K"):
        deblur_ops.nu_conv(x, bank, idx[:, :1], w)
    with pytest.raises(ValueError, match="NaN or Inf"):
        deblur_ops.nu_conv(x, bank, idx, w.masked_fill(w > 0.5, float("nan")))
    with pytest.raises(ValueError, match="mode must be one of"):
        deblur_ops.nu_conv(x, bank, idx, w, mode="valid")
    with pytest.raises(ValueError, match="padding must be one of"):
        deblur_ops.nu_conv(x, bank, idx, w, padding="mirror")


@needs_ext
def test_kernel_rejects_out_of_range_idx_without_reading_out_of_bounds():
    x, bank, idx, w = make(1, 1, 6, 6, 2, 3, 3, 3)
    for bad in (idx - 1, idx + 1):
        with pytest.raises(RuntimeError, match="idx values must lie in"):
            torch.ops.deblur_ops.nu_conv(x, bank, bad, w, "gather", "zeros")
    with pytest.raises(RuntimeError, match="padding must be"):
        torch.ops.deblur_ops.nu_conv(x, bank, idx, w, "gather", "mirror")


@needs_ext
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=requires_cuda)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_op_rejects_half_precision_with_a_clear_message(device, dtype):
    # No kernel is compiled for 16-bit floats: the op itself (below the Python checks) must say so.
    x, bank, idx, w = make(1, 1, 6, 6, 2, 3, 3, 3, device=device)
    x, bank, w = x.to(dtype), bank.to(dtype), w.to(dtype)
    with pytest.raises(RuntimeError, match=f"x must be float32 or float64, got {HALF_NAMES[dtype]}"):
        torch.ops.deblur_ops.nu_conv(x, bank, idx, w, "gather", "zeros")
    with pytest.raises(RuntimeError, match="x must be float32 or float64"):
        torch.ops.deblur_ops.nu_conv_backward(x, x, bank, idx, w, "scatter", "zeros", [True, True, True])


# The CUDA tests take ``device`` as a defaulted argument (pytest passes nothing to it), so that
# the same bodies can be rehearsed on the CPU by calling them with device="cpu".
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("K,Bf", [(1, 1), (4, 2)])
@pytest.mark.parametrize("mode,padding", list(itertools.product(MODES, PADDINGS)))
def test_cuda_matches_cpu_kernel_and_reference(mode, padding, K, Bf, dtype, device="cuda"):
    x, bank, idx, w = make(2, 3, 37, 45, K, 7, 9, 13, Bf=Bf)
    want = ref.nu_conv(x, bank, idx, w, mode=mode, padding=padding)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {}
    x, bank, w = x.to(dtype), bank.to(dtype), w.to(dtype)
    cpu = deblur_ops.nu_conv(x, bank, idx, w, mode=mode, padding=padding)
    leaves = [t.to(device).requires_grad_() for t in (x, bank, w)]
    y = deblur_ops.nu_conv(leaves[0], leaves[1], idx.to(device), leaves[2], mode=mode,
                           padding=padding)
    torch.testing.assert_close(y.cpu(), cpu, **tol)
    torch.testing.assert_close(y.cpu().double(), want, **tol)
    u = torch.randn_like(x)
    got = torch.autograd.grad(y, leaves, u.to(device))
    cpu_leaves = [t.clone().double().requires_grad_() for t in (x, bank, w)]
    wanted = torch.autograd.grad(
        ref.nu_conv_core(cpu_leaves[0], cpu_leaves[1], idx, cpu_leaves[2], mode, padding),
        cpu_leaves, u.double())
    # In float32 the bank gradient sums ~B*C*H*W*K (20 000) products per tap: rounding reaches 1e-4
    # in absolute terms where those sums cancel.
    grad_tol = {"rtol": 1e-4, "atol": 1e-3} if dtype == torch.float32 else {}
    for a, b in zip(got, wanted):
        torch.testing.assert_close(a.cpu().double(), b, **grad_tol)


@requires_cuda
@pytest.mark.parametrize("mode,padding", list(itertools.product(MODES, PADDINGS)))
def test_cuda_gradcheck(mode, padding, device="cuda"):
    x, bank, idx, w = make(2, 2, 5, 4, 2, 3, 3, 5, Bf=1, device=device)
    inputs = (x.requires_grad_(), bank.requires_grad_(), idx, w.requires_grad_())
    fn = lambda a, b, i, c: deblur_ops.nu_conv(a, b, i, c, mode=mode, padding=padding)  # noqa: E731
    # The bank gradient is reduced with atomicAdd, whose order (and so the last bits) varies.
    assert torch.autograd.gradcheck(fn, inputs, nondet_tol=1e-10)


@requires_cuda
@pytest.mark.parametrize("mode,padding", list(itertools.product(MODES, PADDINGS)))
def test_cuda_opcheck(mode, padding, device="cuda"):
    x, bank, idx, w = make(2, 2, 6, 5, 2, 3, 3, 3, Bf=1, device=device)
    args = (x.requires_grad_(), bank.requires_grad_(), idx, w.requires_grad_(), mode, padding)
    torch.library.opcheck(torch.ops.deblur_ops.nu_conv.default, args)
    torch.library.opcheck(torch.ops.deblur_ops.nu_conv_backward.default,
                          (torch.randn_like(x), x.detach(), bank.detach(), idx, w.detach(), mode,
                           padding, [True, True, True]))


@requires_cuda
@pytest.mark.parametrize("mode", MODES)
def test_cuda_torch_compile_fullgraph(mode, device="cuda"):
    x, bank, idx, w = make(1, 2, 16, 12, 2, 3, 5, 3, dtype=torch.float32, device=device)

    def f(x, bank, idx, w):
        return torch.sin(deblur_ops.nu_conv(x, bank, idx, w, mode=mode, padding="reflect") * 2)

    compiled = torch.compile(f, fullgraph=True)
    results = []
    for fn in (compiled, f):
        leaves = [t.clone().requires_grad_() for t in (x, bank, w)]
        y = fn(leaves[0], leaves[1], idx, leaves[2])
        results.append((y, *torch.autograd.grad(y.square().sum(), leaves)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.cpu(), b)


@pytest.mark.parametrize("idx_batch,w_batch", [(1, 1), (1, 3), (3, 1), (3, 3)])
@pytest.mark.parametrize("mode,padding", [("gather", "zeros"), ("scatter", "reflect")])
def test_idx_and_weights_broadcast_over_the_batch_independently(idx_batch, w_batch, mode, padding):
    x, bank, idx, w = make(3, 2, 6, 5, 2, 4, 3, 3)
    idx, w = idx[:idx_batch], w[:w_batch]
    # Oracle: both fields expanded to the batch explicitly, one image at a time.
    want = torch.cat([ref.nu_conv(x[b:b + 1], bank, idx[b % idx_batch][None], w[b % w_batch][None],
                                  mode=mode, padding=padding) for b in range(3)])
    torch.testing.assert_close(ref.nu_conv(x, bank, idx, w, mode=mode, padding=padding), want)
    leaves = [t.clone().requires_grad_() for t in (x, bank, w)]
    y = deblur_ops.nu_conv(leaves[0], leaves[1], idx, leaves[2], mode=mode, padding=padding)
    torch.testing.assert_close(y, want)
    got = torch.autograd.grad(y, leaves, torch.ones_like(y))
    expected = torch.autograd.grad(ref.nu_conv_core(*leaves[:2], idx, leaves[2], mode, padding),
                                   leaves, torch.ones_like(y))
    assert got[2].shape == w.shape
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)
    if _extension.has_kernel("nu_conv", x.device):
        torch.library.opcheck(torch.ops.deblur_ops.nu_conv.default,
                              (x, bank, idx, w.requires_grad_(), mode, padding))


@needs_ext
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_bank_gradient_independent_of_thread_count(threads):
    # Partial bank gradients are per chunk of work, not per thread id (sized before the run).
    x, bank, idx, w = make(2, 2, 40, 36, 2, 3, 5, 5, Bf=1)
    grad = torch.randn_like(x)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        got = torch.ops.deblur_ops.nu_conv_backward(grad, x, bank, idx, w, "gather", "zeros",
                                                    [False, True, False])[1]
    finally:
        torch.set_num_threads(before)
    leaf = bank.clone().requires_grad_()
    want, = torch.autograd.grad(ref.nu_conv_core(x, leaf, idx, w, "gather", "zeros"), leaf, grad)
    torch.testing.assert_close(got, want)


def _nu_conv_second_order(fn, x, bank, idx, w, seed=0):
    """Hessian-vector products of <u, fn(x, bank, idx, w)> in the direction (a, b, c)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(x.shape, generator=g, dtype=x.dtype)
    dirs = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in (x, bank, w)]
    leaves = [t.detach().requires_grad_() for t in (x, bank, w)]
    first = torch.autograd.grad((u * fn(leaves[0], leaves[1], idx, leaves[2])).sum(), leaves,
                                create_graph=True)
    return torch.autograd.grad(sum((f * d).sum() for f, d in zip(first, dirs)), leaves,
                               allow_unused=True)


@pytest.mark.parametrize("mode,padding", [("gather", "zeros"), ("scatter", "reflect"),
                                          ("gather", "circular"), ("scatter", "replicate")])
def test_gradgradcheck(mode, padding):
    x, bank, idx, w = make(2, 2, 5, 4, 2, 3, 3, 3, Bf=1)
    inputs = (x.requires_grad_(), bank.requires_grad_(), idx, w.requires_grad_())
    fn = lambda a, b, i, c: deblur_ops.nu_conv(a, b, i, c, mode=mode, padding=padding)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, inputs)


@needs_ext
@pytest.mark.parametrize("mode,padding", list(itertools.product(MODES, PADDINGS)))
def test_second_derivatives_match_reference(mode, padding):
    # nu_conv is trilinear in (x, bank, w): its mixed second derivatives are not zero.
    x, bank, idx, w = make(2, 2, 6, 7, 3, 4, 3, 5, Bf=1)
    got = _nu_conv_second_order(
        lambda *a: deblur_ops.nu_conv(*a, mode=mode, padding=padding), x, bank, idx, w)
    want = _nu_conv_second_order(
        lambda *a: ref.nu_conv_core(*a, mode, padding), x, bank, idx, w)
    assert all(b.abs().max() > 0.1 for b in want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


PATHS = ("runs", "pixels", "filters")


def random_case(rng: np.random.Generator, dtype=torch.float64):
    """A small random NU-Conv problem: sizes, field sharing, zero weights, per-pixel or run-like
    indices, int32 or int64, and windows up to 19 taps wide (several vector lengths)."""
    B, C, K, F = (int(rng.integers(1, n)) for n in (3, 4, 5, 7))
    H, W = (int(rng.integers(1, 13)) for _ in range(2))
    kh, kw = (2 * int(rng.integers(0, 10)) + 1 for _ in range(2))
    x, bank, idx, w = make(B, C, H, W, K, F, kh, kw, Bf=int(rng.choice([1, B])), dtype=dtype,
                           seed=int(rng.integers(0, 2**31)))
    if rng.random() < 0.3:  # runs of one filter along rows, as smooth fields have
        idx = idx[..., :1].expand_as(idx).contiguous()
    w = w.masked_fill(w < 0.2, 0.0)  # zero weights are skipped by the kernels
    if rng.random() < 0.3:
        idx = idx.int()
    return x, bank, idx, w, str(rng.choice(MODES)), str(rng.choice(PADDINGS))


@needs_ext
@pytest.mark.parametrize("path", PATHS)
def test_forced_path_matches_reference_on_random_cases(path, monkeypatch):
    monkeypatch.setenv("DEBLUR_NU_CONV_PATH", path)
    rng = np.random.default_rng(PATHS.index(path))
    for case in range(200):
        x, bank, idx, w, mode, padding = random_case(rng)
        assert torch.ops.deblur_ops.nu_conv_path(x, bank, idx, w, mode, padding) == path
        leaves = [t.clone().requires_grad_() for t in (x, bank, w)]
        y = deblur_ops.nu_conv(leaves[0], leaves[1], idx, leaves[2], mode=mode, padding=padding)
        ref_leaves = [t.clone().requires_grad_() for t in (x, bank, w)]
        want = ref.nu_conv_core(ref_leaves[0], ref_leaves[1], idx, ref_leaves[2], mode, padding)
        msg = f"case {case}: {path} {mode} {padding} x {tuple(x.shape)} bank {tuple(bank.shape)} idx {tuple(idx.shape)}"
        torch.testing.assert_close(y, want, msg=msg)
        u = torch.randn_like(x)
        got = torch.autograd.grad(y, leaves, u)
        expected = torch.autograd.grad(want, ref_leaves, u)
        for name, a, b in zip(("x", "bank", "weights"), got, expected):
            torch.testing.assert_close(a, b, msg=f"{msg}: grad {name}")


@needs_ext
@pytest.mark.parametrize("path", PATHS)
def test_forced_path_float32_wide_windows(path, monkeypatch):
    # float32 packs 16 taps per vector: windows up to 35 wide cover full, partial and several vectors.
    monkeypatch.setenv("DEBLUR_NU_CONV_PATH", path)
    rng = np.random.default_rng(10 + PATHS.index(path))
    for case in range(20):
        kh, kw = (2 * int(rng.integers(0, 18)) + 1 for _ in range(2))
        x, bank, idx, w = make(2, 2, 11, 13, 3, 9, kh, kw, Bf=1, dtype=torch.float32, seed=case)
        mode, padding = str(rng.choice(MODES)), str(rng.choice(PADDINGS))
        leaves = [t.clone().requires_grad_() for t in (x, bank, w)]
        y = deblur_ops.nu_conv(leaves[0], leaves[1], idx, leaves[2], mode=mode, padding=padding)
        ref_leaves = [t.double().requires_grad_() for t in (x, bank, w)]
        want = ref.nu_conv_core(ref_leaves[0], ref_leaves[1], idx, ref_leaves[2], mode, padding)
        torch.testing.assert_close(y, want.float(), rtol=1e-4, atol=1e-4)
        u = torch.randn_like(x)
        for a, b in zip(torch.autograd.grad(y, leaves, u),
                        torch.autograd.grad(want, ref_leaves, u.double())):
            torch.testing.assert_close(a, b.float(), rtol=1e-4, atol=2e-4)


@needs_ext
def test_cost_model_picks_the_path_for_the_field():
    from deblur_ops.apps.bench import smooth_motion_field
    from deblur_ops.psf import grid_weights, motion_bank, motion_weights

    size = 96
    x = torch.rand(1, 1, size, size)
    bank, grid = motion_bank(lengths=range(1, 32, 2), size=31)
    idx, w = motion_weights(*smooth_motion_field(size), grid)
    path = torch.ops.deblur_ops.nu_conv_path
    assert path(x, bank, idx, w.float(), "gather", "zeros") == "runs"
    assert path(x, bank, idx, w.float(), "scatter", "reflect") == "runs"
    # Kernel-prediction style: every pixel draws its own dense filters.
    dense = torch.rand(200, 15, 15)
    rand_idx = torch.randint(0, 200, (1, 4, size, size))
    assert path(x, dense, rand_idx, torch.rand(1, 4, size, size), "gather", "zeros") == "pixels"
    assert path(x.double(), dense.double(), rand_idx, torch.rand(1, 4, size, size, dtype=torch.float64),
                "scatter", "zeros") == "pixels"
    # A 5 x 5 grid of dense 31 x 31 PSFs: long runs, but every run pays 961 taps; forming the local
    # filter once per pixel is cheaper (measured 2x) and so is it than 25 convolutions (2.6x).
    g_idx, g_w = grid_weights((5, 5), (size, size))
    psfs = torch.rand(25, 31, 31)
    for mode in MODES:
        assert path(x, psfs, g_idx, g_w.float(), mode, "zeros") == "pixels"
    # Small 7 x 7 PSFs on the same grid: the run loop's few taps per run win.
    assert path(x, psfs[:, 12:19, 12:19].contiguous(), g_idx, g_w.float(), "gather", "zeros") == "runs"


@needs_ext
def test_unknown_forced_path_is_a_named_error(monkeypatch):
    x, bank, idx, w = make(1, 1, 6, 6, 2, 3, 3, 3)
    monkeypatch.setenv("DEBLUR_NU_CONV_PATH", "fastest")
    with pytest.raises(RuntimeError, match="DEBLUR_NU_CONV_PATH must be 'auto', 'runs', 'pixels' or 'filters'"):
        torch.ops.deblur_ops.nu_conv(x, bank, idx, w, "gather", "zeros")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("path", PATHS)
def test_cuda_forced_paths_match_reference(path, monkeypatch):
    # On CUDA "runs" and "pixels" run the one CUDA kernel; "filters" the ATen convolutions.
    monkeypatch.setenv("DEBLUR_NU_CONV_PATH", path)
    rng = np.random.default_rng(20 + PATHS.index(path))
    for _ in range(20):
        x, bank, idx, w, mode, padding = random_case(rng)
        leaves = [t.cuda().requires_grad_() for t in (x, bank, w)]
        y = deblur_ops.nu_conv(leaves[0], leaves[1], idx.cuda(), leaves[2], mode=mode, padding=padding)
        ref_leaves = [t.clone().requires_grad_() for t in (x, bank, w)]
        want = ref.nu_conv_core(ref_leaves[0], ref_leaves[1], idx, ref_leaves[2], mode, padding)
        torch.testing.assert_close(y.cpu(), want)
        u = torch.randn_like(x)
        for a, b in zip(torch.autograd.grad(y, leaves, u.cuda()), torch.autograd.grad(want, ref_leaves, u)):
            torch.testing.assert_close(a.cpu(), b)


@pytest.mark.parametrize("mode", MODES)
def test_bench_unfold_formulation_matches_reference(mode):
    # `deblur bench` measures the per-pixel path against this pure-PyTorch formulation.
    from deblur_ops.apps.bench import nu_conv_unfold

    x, bank, idx, w = make(2, 2, 19, 11, 3, 5, 5, 7, Bf=1)
    leaves = [t.clone().requires_grad_() for t in (x, bank, w)]
    y = nu_conv_unfold(leaves[0], leaves[1], idx, leaves[2], mode=mode, rows=6)
    ref_leaves = [t.clone().requires_grad_() for t in (x, bank, w)]
    want = ref.nu_conv_core(ref_leaves[0], ref_leaves[1], idx, ref_leaves[2], mode, "zeros")
    torch.testing.assert_close(y, want)
    u = torch.randn_like(x)
    for a, b in zip(torch.autograd.grad(y, leaves, u), torch.autograd.grad(want, ref_leaves, u)):
        torch.testing.assert_close(a, b)
