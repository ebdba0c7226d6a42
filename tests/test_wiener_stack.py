import importlib
import math
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import deblur_ops
from deblur_ops import _extension, memory, reference
from deblur_ops.data.degrade import blur
from deblur_ops.psf import linear_motion_kernel

from .conftest import requires_cuda

ws_module = importlib.import_module("deblur_ops.ops.wiener_stack")
rl_module = importlib.import_module("deblur_ops.restore.richardson_lucy")

OP = torch.ops.deblur_ops
PADDINGS = ("reflect", "edge_taper", "circular")
REGULARIZERS = ("identity", "laplacian")

needs_extension = pytest.mark.skipif(
    "wiener_stack" not in _extension.KERNELS or not _extension.KERNELS["wiener_stack"],
    reason="compiled extension not loaded",
)


def sample_inputs(device="cpu", *, dtype=torch.float64, image_shape=(2, 3, 21, 18), psf_shape=(5, 3),
                  requires_grad=False):
    image = torch.randn(image_shape, dtype=dtype, device=device, requires_grad=requires_grad)
    psf = torch.rand(psf_shape, dtype=dtype, device=device) + 0.05
    return image, psf / psf.sum()


def textbook_circular_wiener(image: np.ndarray, psf: np.ndarray, snr_db: float, laplacian=False):
    """Independent NumPy oracle: full complex FFTs, PSF centre rolled to the origin."""
    shape = image.shape
    padded = np.zeros(shape)
    padded[tuple(slice(0, k) for k in psf.shape)] = psf
    otf = np.fft.fftn(np.roll(padded, [-(k // 2) for k in psf.shape], axis=tuple(range(psf.ndim))))
    reg = np.ones(shape)
    if laplacian:
        stencil = np.zeros(shape)
        for d in range(len(shape)):
            for s in (1, -1):
                idx = [0] * len(shape)
                idx[d] = s % shape[d]
                stencil[tuple(idx)] += 1
        stencil[(0,) * len(shape)] = -2 * len(shape)
        reg = np.abs(np.fft.fftn(stencil)) ** 2
    lam = 10 ** (-snr_db / 10)
    est = np.conj(otf) * np.fft.fftn(image) / (np.abs(otf) ** 2 + lam * reg)
    return np.real(np.fft.ifftn(est))


class TestWienerStack:
    @pytest.mark.parametrize("padding", PADDINGS)
    @pytest.mark.parametrize("regularizer", REGULARIZERS)
    @pytest.mark.parametrize(
        "image_shape,psf_shape",
        [((2, 3, 21, 18), (5, 3)), ((1, 1, 17, 16), (17, 1)), ((2, 1, 20, 21), (2, 5, 5)),
         ((1, 2, 9, 16, 17), (3, 5, 3))],
    )
    def test_matches_reference(self, image_shape, psf_shape, regularizer, padding):
        image, psf = sample_inputs(image_shape=image_shape, psf_shape=psf_shape)
        snr = torch.tensor([5.0, 20.0, 40.0], dtype=torch.float64)
        got = deblur_ops.wiener_stack(image, psf, snr, regularizer=regularizer, padding=padding)
        want = reference.wiener_stack(image, psf, snr, regularizer=regularizer, padding=padding)
        assert got.shape == (image_shape[0], 3) + image_shape[1:]
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)

    def test_float32_matches_float64_reference(self):
        image, psf = sample_inputs(image_shape=(1, 2, 40, 33), psf_shape=(7, 7))
        # Up to 40 dB the inverse filter amplifies float32 rounding at most ~50x (1 / 2 sqrt(lambda)).
        snr = [9.0, 25.0, 40.0]
        got = deblur_ops.wiener_stack(image.float(), psf.float(), snr)
        want = reference.wiener_stack(image, psf, snr)
        torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=1e-4)

    @pytest.mark.parametrize("laplacian", [False, True])
    @pytest.mark.parametrize("shape,ksize", [((20, 24), (5, 3)), ((6, 10, 9), (3, 3, 5))])
    def test_circular_equals_textbook_wiener(self, shape, ksize, laplacian):
        rng = np.random.default_rng(0)
        image, psf = rng.random(shape), rng.random(ksize)
        got = deblur_ops.wiener_stack(torch.tensor(image)[None, None], torch.tensor(psf), [12.0, 30.0],
                                      padding="circular",
                                      regularizer="laplacian" if laplacian else "identity")
        for j, snr in enumerate((12.0, 30.0)):
            want = textbook_circular_wiener(image, psf, snr, laplacian)
            np.testing.assert_allclose(got[0, j, 0].numpy(), want, rtol=1e-10, atol=1e-10)

    def test_default_snrs_are_paper_001(self):
        assert reference.DEFAULT_SNR_DB == tuple(range(9, 66, 4))
        assert len(reference.DEFAULT_SNR_DB) == 15
        out = deblur_ops.wiener_stack(torch.rand(1, 1, 16, 16), torch.ones(3, 3) / 9)
        assert out.shape == (1, 15, 1, 16, 16)

    def test_delta_psf_scales_image(self):
        # With K = 1 every filter is Y / (1 + lambda_j), whatever the padding.
        image = torch.rand(1, 2, 15, 12, dtype=torch.float64)
        delta = torch.zeros(3, 3, dtype=torch.float64)
        delta[1, 1] = 1
        snr = torch.tensor([0.0, 10.0])
        for padding in PADDINGS:
            out = deblur_ops.wiener_stack(image, delta, snr, padding=padding)
            for j, s in enumerate(snr.tolist()):
                torch.testing.assert_close(out[:, j], image / (1 + 10 ** (-s / 10)))

    def test_reflect_padding_avoids_border_ringing(self):
        sharp = torch.from_numpy(np.linspace(0, 1, 64)[None, :] * np.ones((64, 1)))[None, None]
        psf = linear_motion_kernel(9, 0, dtype=torch.float64)
        blurred = blur(sharp, psf, padding="replicate")
        errors = {}
        for padding in PADDINGS:
            out = deblur_ops.wiener_stack(blurred, psf, [40.0], padding=padding)[:, 0]
            errors[padding] = (out - sharp)[..., :, :8].abs().mean().item()
        # A ramp wraps into a large jump: circular rings, reflect and edge taper do far better.
        assert errors["reflect"] < 0.2 * errors["circular"]
        assert errors["edge_taper"] < 0.5 * errors["circular"]

    @pytest.mark.parametrize("regularizer", REGULARIZERS)
    def test_gradcheck(self, regularizer):
        image, psf = sample_inputs(image_shape=(1, 2, 9, 8), psf_shape=(3, 3), requires_grad=True)
        fn = lambda x: deblur_ops.wiener_stack(x, psf, [10.0, 30.0], regularizer=regularizer)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (image,))
        assert torch.autograd.gradgradcheck(fn, (image,))

    def test_gradcheck_3d(self):
        image, psf = sample_inputs(image_shape=(1, 1, 5, 6, 7), psf_shape=(3, 3, 3), requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: deblur_ops.wiener_stack(x, psf, [15.0]), (image,))

    def test_gradient_wrt_psf_and_snr(self):
        image, psf = sample_inputs(image_shape=(1, 1, 8, 9), psf_shape=(3, 3))
        psf.requires_grad_()
        snr = torch.tensor([10.0, 25.0], dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda p, s: deblur_ops.wiener_stack(image, p, s, padding="circular"), (psf, snr))

    @needs_extension
    def test_backward_op_is_adjoint_of_forward(self):
        x = torch.randn(2, 3, 12, 11, dtype=torch.float64)
        g = torch.randn(2, 4, 3, 12, 11, dtype=torch.float64)
        psf = torch.rand(2, 5, 3, dtype=torch.float64)
        snr = torch.tensor([3.0, 10.0, 20.0, 30.0], dtype=torch.float64)
        for reg in REGULARIZERS:
            ax = OP.wiener_stack(x, psf, snr, reg)
            atg = OP.wiener_stack_backward(g, psf, snr, reg)
            torch.testing.assert_close((ax * g).sum(), (x * atg).sum(), rtol=1e-12, atol=1e-12)

    @needs_extension
    @pytest.mark.parametrize("regularizer", REGULARIZERS)
    def test_opcheck(self, regularizer):
        image = torch.randn(2, 2, 16, 15, requires_grad=True)
        psf = torch.rand(2, 3, 5)
        snr = torch.tensor([10.0, 20.0])
        torch.library.opcheck(OP.wiener_stack, (image, psf, snr, regularizer))
        torch.library.opcheck(OP.wiener_stack_backward,
                              (torch.randn(2, 2, 2, 16, 15), psf, snr, regularizer))
        torch.library.opcheck(OP.wiener_stack, (torch.randn(1, 1, 5, 6, 7), torch.rand(1, 3, 3, 3),
                                                snr, regularizer))

    def test_torch_compile_fullgraph(self):
        image, psf = sample_inputs(dtype=torch.float32, image_shape=(1, 1, 32, 30), psf_shape=(5, 5))
        compiled = torch.compile(lambda x, p: deblur_ops.wiener_stack(x, p, [10.0, 20.0]), fullgraph=True)
        torch.testing.assert_close(compiled(image, psf), deblur_ops.wiener_stack(image, psf, [10.0, 20.0]))

    @pytest.mark.parametrize("cases", [
        [((2, 2, 11, 20), (3, 3)), ((2, 3, 9, 14), (5, 3)), ((3, 2, 16, 12), (3, 5))],
        [((2, 1, 8, 10, 12), (3, 3, 3)), ((1, 2, 6, 7, 9), (3, 3, 5)), ((2, 2, 5, 6, 7), (3, 3, 3))],
    ], ids=["2d", "3d"])
    def test_torch_compile_dynamic_shapes(self, cases):
        # Inductor, symbolic sizes: the reflect-padded, cropped output's strides used to fail
        # Inductor's stride-order check (InductorError: ValueRangeError) as soon as B or C > 1.
        compiled = torch.compile(deblur_ops.wiener_stack, dynamic=True, fullgraph=True)
        for image_shape, psf_shape in cases:
            image, psf = sample_inputs(image_shape=image_shape, psf_shape=psf_shape)
            torch.testing.assert_close(compiled(image, psf, [10.0, 30.0]),
                                       reference.wiener_stack(image, psf, [10.0, 30.0]))

    @settings(max_examples=200, deadline=None)
    @given(
        batch=st.integers(1, 2), channels=st.integers(1, 3), height=st.integers(3, 20),
        width=st.integers(3, 20), kh=st.integers(0, 4), kw=st.integers(0, 4),
        regularizer=st.sampled_from(REGULARIZERS), padding=st.sampled_from(PADDINGS),
        per_batch_psf=st.booleans(), snrs=st.lists(st.floats(-10, 70), min_size=1, max_size=4),
        seed=st.integers(0, 2**31 - 1),
    )
    def test_property_matches_reference(self, batch, channels, height, width, kh, kw, regularizer,
                                        padding, per_batch_psf, snrs, seed):
        gen = torch.Generator().manual_seed(seed)
        kh, kw = min(2 * kh + 1, height - (height + 1) % 2), min(2 * kw + 1, width - (width + 1) % 2)
        image = torch.randn(batch, channels, height, width, generator=gen, dtype=torch.float64)
        psf_shape = ((batch,) if per_batch_psf else ()) + (kh, kw)
        psf = torch.rand(psf_shape, generator=gen, dtype=torch.float64) + 0.01
        got = deblur_ops.wiener_stack(image, psf, snrs, regularizer=regularizer, padding=padding)
        want = reference.wiener_stack(image, psf, snrs, regularizer=regularizer, padding=padding)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)

    @pytest.mark.parametrize(
        "image,psf,kwargs,match",
        [
            (torch.rand(8, 8), torch.ones(3, 3), {}, r"image must have shape \(B, C, H, W\)"),
            (torch.ones(1, 1, 8, 8, dtype=torch.int32), torch.ones(3, 3), {}, "image must be float32 or float64"),
            (torch.rand(1, 1, 8, 8), torch.ones(9, 9), {}, "larger than the image"),
            (torch.rand(1, 1, 8, 8), torch.ones(4, 3), {}, "sizes must be odd"),
            (torch.rand(1, 1, 8, 8), torch.zeros(3, 3), {}, "all zeros"),
            (torch.rand(1, 1, 8, 8), torch.tensor([[0.0, 0, 0], [1, 0, -1], [0, 0, 0]]), {},
             r"psf must have a positive, finite sum \(usually 1\), got sum 0"),
            (torch.rand(2, 1, 8, 8), torch.stack([torch.ones(3, 3), -torch.ones(3, 3)]), {},
             "got sum -9 for batch item 1"),
            (torch.full((1, 1, 8, 8), float("nan")), torch.ones(3, 3), {}, "image contains 64 NaN"),
            (torch.rand(1, 1, 8, 8), torch.tensor([[1.0, float("inf"), 1.0]] * 3), {}, "psf contains 3 NaN or Inf"),
            (torch.rand(0, 1, 8, 8), torch.ones(3, 3), {}, "image is empty"),
            (torch.rand(2, 1, 8, 8), torch.ones(3, 3, 3), {}, r"psf must have shape \(kh, kw\) or \(B, kh, kw\) with B = 2"),
            (torch.rand(1, 1, 8, 8), torch.ones(3, 3), {"snr_db": [[1.0, 2.0]]}, "snr_db must be a non-empty 1-D"),
            (torch.rand(1, 1, 8, 8), torch.ones(3, 3), {"snr_db": []}, "snr_db must be a non-empty 1-D"),
            (torch.rand(1, 1, 8, 8), torch.ones(3, 3), {"padding": "wrap"}, "padding must be one of"),
            (torch.rand(1, 1, 8, 8), torch.ones(3, 3), {"regularizer": "tv"}, "regularizer must be one of"),
            (torch.rand(1, 1, 8, 8), torch.ones(3, 3, device="meta"), {}, "psf is on meta but image is on cpu"),
        ],
    )
    def test_bad_input(self, image, psf, kwargs, match):
        with pytest.raises(ValueError, match=match):
            deblur_ops.wiener_stack(image, psf, **kwargs)

    def test_non_tensor_input(self):
        with pytest.raises(TypeError, match="image must be a torch.Tensor, got ndarray"):
            deblur_ops.wiener_stack(np.zeros((1, 1, 8, 8)), torch.ones(3, 3))

    @needs_extension
    def test_op_level_checks(self):
        with pytest.raises(RuntimeError, match="psf sizes must be odd"):
            OP.wiener_stack(torch.rand(1, 1, 8, 8), torch.ones(1, 2, 3), torch.tensor([1.0]), "identity")
        with pytest.raises(RuntimeError, match="regularizer must be 'identity' or 'laplacian'"):
            OP.wiener_stack(torch.rand(1, 1, 8, 8), torch.ones(1, 3, 3), torch.tensor([1.0]), "tv")

    def test_reference_fallback_without_extension(self, tmp_path):
        script = (
            "import torch, deblur_ops\n"
            "assert set(deblur_ops.backend().values()) == {'reference'}, deblur_ops.backend()\n"
            "x = torch.arange(64.).reshape(1, 1, 8, 8); p = torch.ones(3, 3) / 9\n"
            "torch.save(deblur_ops.wiener_stack(x, p), r'%s')\n" % (tmp_path / "out.pt")
        )
        env = dict(os.environ, DEBLUR_OPS_NO_EXTENSION="1")
        subprocess.run([sys.executable, "-c", script], check=True, env=env)
        x = torch.arange(64.0).reshape(1, 1, 8, 8)
        torch.testing.assert_close(torch.load(tmp_path / "out.pt"), deblur_ops.wiener_stack(x, torch.ones(3, 3) / 9))

    @needs_extension
    @pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=requires_cuda)])
    @pytest.mark.parametrize("dtype,name", [(torch.float16, "Half"), (torch.bfloat16, "BFloat16")])
    def test_op_rejects_half_precision_with_a_clear_message(self, device, dtype, name):
        # No kernel is compiled for 16-bit floats: the op itself (below the Python checks) must say so.
        image, psf = sample_inputs(device, dtype=dtype, image_shape=(1, 1, 8, 8), psf_shape=(1, 3, 3))
        snr = torch.tensor([10.0], device=device)
        with pytest.raises(RuntimeError, match=f"image must be float32 or float64, got {name}"):
            OP.wiener_stack(image, psf, snr, "identity")
        with pytest.raises(RuntimeError, match=f"grad must be float32 or float64, got {name}"):
            OP.wiener_stack_backward(image[:, None], psf, snr, "identity")

    # The CUDA tests take ``device`` as a defaulted argument (pytest passes nothing to it), so that
    # the same bodies can be rehearsed on the CPU by calling them with device="cpu".
    @requires_cuda
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize("regularizer", REGULARIZERS)
    @pytest.mark.parametrize("image_shape,psf_shape", [((2, 3, 65, 48), (2, 7, 5)),
                                                       ((2, 2, 9, 20, 17), (2, 3, 7, 5))])
    def test_cuda_matches_cpu(self, dtype, regularizer, image_shape, psf_shape, device="cuda"):
        image, psf = sample_inputs(dtype=dtype, image_shape=image_shape, psf_shape=psf_shape)
        snr = torch.tensor([9.0, 25.0, 60.0], dtype=dtype)
        cpu = deblur_ops.wiener_stack(image, psf, snr, regularizer=regularizer)
        gpu = deblur_ops.wiener_stack(image.to(device), psf.to(device), snr.to(device), regularizer=regularizer)
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=tol, atol=tol)
        grad = torch.randn_like(cpu)
        x_cpu, x_gpu = image.clone().requires_grad_(), image.to(device).requires_grad_()
        deblur_ops.wiener_stack(x_cpu, psf, snr, regularizer=regularizer).backward(grad)
        deblur_ops.wiener_stack(x_gpu, psf.to(device), snr.to(device), regularizer=regularizer).backward(
            grad.to(device))
        torch.testing.assert_close(x_gpu.grad.cpu(), x_cpu.grad, rtol=tol, atol=tol)

    @requires_cuda
    @pytest.mark.parametrize("regularizer", REGULARIZERS)
    @pytest.mark.parametrize("image_shape,psf_shape", [((1, 2, 9, 8), (3, 3)), ((1, 1, 5, 6, 7), (3, 3, 3))])
    def test_cuda_gradcheck(self, regularizer, image_shape, psf_shape, device="cuda"):
        image, psf = sample_inputs(device, image_shape=image_shape, psf_shape=psf_shape, requires_grad=True)
        fn = lambda x: deblur_ops.wiener_stack(x, psf, [10.0, 30.0], regularizer=regularizer)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (image,))
        assert torch.autograd.gradgradcheck(fn, (image,))

    @requires_cuda
    @pytest.mark.parametrize("regularizer", REGULARIZERS)
    def test_cuda_opcheck(self, regularizer, device="cuda"):
        image = torch.randn(2, 2, 16, 15, device=device, requires_grad=True)
        psf = torch.rand(2, 3, 5, device=device)
        snr = torch.tensor([10.0, 20.0], device=device)
        torch.library.opcheck(OP.wiener_stack, (image, psf, snr, regularizer))
        torch.library.opcheck(OP.wiener_stack_backward,
                              (torch.randn(2, 2, 2, 16, 15, device=device), psf, snr, regularizer))
        torch.library.opcheck(OP.wiener_stack, (torch.randn(1, 1, 5, 6, 7, device=device),
                                                torch.rand(1, 3, 3, 3, device=device), snr, regularizer))

    @requires_cuda
    @pytest.mark.parametrize("image_shape,psf_shape", [((1, 1, 32, 30), (5, 5)), ((1, 1, 8, 12, 10), (3, 5, 3))])
    def test_cuda_torch_compile_fullgraph(self, image_shape, psf_shape, device="cuda"):
        image, psf = sample_inputs(device, dtype=torch.float32, image_shape=image_shape, psf_shape=psf_shape)

        def f(x, p):
            return torch.tanh(deblur_ops.wiener_stack(x, p, [10.0, 20.0]) * 2)

        compiled = torch.compile(f, fullgraph=True)
        results = []
        for fn in (compiled, f):
            x = image.clone().requires_grad_()
            y = fn(x, psf)
            results.append((y, *torch.autograd.grad(y.square().sum(), (x,))))
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


class TestMemory:
    """The stack is computed in parts when the device's budget is small, and again in smaller
    parts after an out-of-memory error; items and filters are independent, so parts are exact."""

    def test_plan_splits_items_then_filters(self):
        one = 4 * 64 * 64  # one float32 plane of the grid
        assert ws_module.plan_parts((8, 1, 64, 64), 15, (64, 64), 4, None) == (8, 15)
        assert ws_module.plan_parts((8, 1, 64, 64), 15, (64, 64), 4, 8 * 32 * one) == (8, 15)
        assert ws_module.plan_parts((8, 1, 64, 64), 15, (64, 64), 4, 3 * 32 * one) == (3, 15)
        assert ws_module.plan_parts((8, 1, 64, 64), 15, (64, 64), 4, 8 * one) == (1, 3)
        assert ws_module.plan_parts((8, 1, 64, 64), 15, (64, 64), 4, 1) == (1, 1)

    def test_no_budget_on_the_host_unless_set(self, monkeypatch):
        monkeypatch.delenv(memory.ENV, raising=False)
        assert memory.memory_budget(torch.device("cpu")) is None
        monkeypatch.setenv(memory.ENV, "123456")
        assert memory.memory_budget(torch.device("cpu")) == 123456

    def test_device_budget_is_most_of_mem_get_info_free_bytes(self, monkeypatch):
        monkeypatch.delenv(memory.ENV, raising=False)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10 << 30, 80 << 30))
        gpu = types.SimpleNamespace(type="cuda")  # the query reads only the type: no device needed
        assert memory.memory_budget(gpu) == int(0.8 * (10 << 30))
        assert rl_module.memory_budget(gpu) == int(0.8 * (10 << 30))

    @pytest.mark.parametrize("padding", ["reflect", "circular"])
    def test_budget_splits_give_the_whole_result_exactly(self, monkeypatch, padding):
        image, psf = sample_inputs(image_shape=(5, 2, 23, 19), psf_shape=(5, 5, 3))  # a PSF per item
        snr = torch.arange(10.0, 40.0, 5.0, dtype=torch.float64)  # 6 filters
        whole = deblur_ops.wiener_stack(image, psf, snr, padding=padding)
        plane = 8 * 2 * math.prod(ws_module._grid(image, psf, padding))
        # Two items of 6 filters per call (3 calls), then one filter of one item (30 calls).
        for budget, expected_calls in ((2 * plane * (2 * 6 + 2), 3), (1, 30)):
            calls = _count_core_calls(monkeypatch)
            monkeypatch.setenv(memory.ENV, str(budget))
            torch.testing.assert_close(deblur_ops.wiener_stack(image, psf, snr, padding=padding), whole,
                                       rtol=0, atol=0)
            assert len(calls) == expected_calls

    def test_out_of_memory_halves_items_then_filters_and_matches(self, monkeypatch):
        image, psf = sample_inputs(image_shape=(4, 1, 20, 20), psf_shape=(5, 5))
        snr = torch.arange(10.0, 40.0, 5.0, dtype=torch.float64)  # 6 filters
        whole = deblur_ops.wiener_stack(image, psf, snr)
        real, shapes = ws_module._core, []

        def small_device(image, psf, snr_db, regularizer):
            shapes.append((image.shape[0], snr_db.shape[0]))
            if image.shape[0] * snr_db.shape[0] > 2:
                raise torch.OutOfMemoryError("simulated: the device holds 2 planes of filters")
            return real(image, psf, snr_db, regularizer)

        monkeypatch.setattr(ws_module, "_core", small_device)
        # Equal to rounding: an inverse FFT over a batch of 2 filters rounds unlike one over 6
        # (MKL vectorises across the batch), 1e-14 here; splits of items alone are bit-exact (above).
        torch.testing.assert_close(deblur_ops.wiener_stack(image, psf, snr), whole, rtol=0, atol=1e-12)
        # 4 items x 6 filters fails, then 2 x 6, then 1 x 6, then 1 x 3; then 1 x 2 fits (3 per item).
        assert shapes[:5] == [(4, 6), (2, 6), (1, 6), (1, 3), (1, 2)]
        assert set(shapes[5:]) == {(1, 2)} and len(shapes) == 4 * 3 + 4

    def test_out_of_memory_on_one_plane_is_raised(self, monkeypatch):
        def no_device(image, psf, snr_db, regularizer):
            raise torch.OutOfMemoryError("simulated")

        monkeypatch.setattr(ws_module, "_core", no_device)
        image, psf = sample_inputs(image_shape=(2, 1, 16, 16), psf_shape=(3, 3))
        with pytest.raises(torch.OutOfMemoryError):
            deblur_ops.wiener_stack(image, psf)

    def test_split_runs_keep_the_image_gradient(self, monkeypatch):
        image, psf = sample_inputs(image_shape=(3, 1, 16, 16), psf_shape=(3, 3))
        weights = torch.rand((3, 15, 1, 16, 16), dtype=image.dtype)
        leaf = image.clone().requires_grad_()
        (deblur_ops.wiener_stack(leaf, psf) * weights).sum().backward()
        expected = leaf.grad.clone()
        leaf.grad = None
        monkeypatch.setenv(memory.ENV, "1")
        (deblur_ops.wiener_stack(leaf, psf) * weights).sum().backward()
        torch.testing.assert_close(leaf.grad, expected, rtol=0, atol=1e-12)


def _count_core_calls(monkeypatch) -> list:
    real, calls = ws_module._core, []

    def counting(*args):
        calls.append(args[0].shape[0])
        return real(*args)

    monkeypatch.setattr(ws_module, "_core", counting)
    return calls
