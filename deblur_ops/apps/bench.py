"""`deblur bench`: custom ops vs their pure-PyTorch references vs peer libraries, in one process.

Each case is timed after warm-up as the median of repeats (CUDA: events after synchronising), on
random non-zero data. Ratios are reference time / custom time (> 1 means the custom op is faster).
For nu_conv the forward reference is the faster of two pure-PyTorch formulations (the tap loop of
``deblur_ops.reference`` and :func:`nu_conv_by_filter`; the "reference" column names it); with
autograd it is :func:`nu_conv_by_filter`, whose backward is far cheaper than the tap loop's. GFLOP/s
counts the dense work
2*H*W*K*kh*kw per forward (x4 for forward+backward): the CPU kernel skips zero taps, so on sparse
motion filters this is an effective rate, on the dense Gaussian grid an actual one.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .. import _extension, reference
from ..ops import learnable_shrink, nu_conv, wiener_stack
from ..psf import grid_weights, linear_motion_kernel, motion_bank, motion_weights

OPS = ("wiener_stack", "learnable_shrink", "nu_conv", "irc_net", "irc", "richardson_lucy")


@dataclass
class Row:
    op: str
    shape: str
    pass_: str
    custom_ms: float
    reference_ms: float
    peer: str | None = None
    peer_ms: float | None = None
    gflops: float | None = None  # floating-point work of one call, in GFLOP
    reference_impl: str = "deblur_ops.reference"
    note: str | None = None  # a measured quantity beyond time (e.g. PSNRs), printed under the table

    @property
    def speedup_vs_reference(self) -> float:
        return self.reference_ms / self.custom_ms

    @property
    def speedup_vs_peer(self) -> float | None:
        return None if self.peer_ms is None else self.peer_ms / self.custom_ms


def time_ms(fn: Callable[[], object], device: torch.device, *, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def _forward_backward(op, inputs: list[torch.Tensor], *args):
    def run():
        for t in inputs:
            t.grad = None
        out = op(*inputs, *args)
        out.backward(torch.ones_like(out))
    return run


def bench_wiener_stack(device, size: int, warmup: int, repeats: int, cpu_peers: bool = True) -> list[Row]:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, size, size, generator=gen).to(device)
    psf = linear_motion_kernel(21, 30, 31).to(device)
    shape = f"1x1x{size}x{size}, psf 31x31, 15 SNRs"
    t = lambda fn: time_ms(fn, device, warmup=warmup, repeats=repeats)  # noqa: E731
    with torch.no_grad():
        custom = t(lambda: wiener_stack(image, psf))
        ref = t(lambda: reference.wiener_stack(image, psf))
        # The bound in interleaved rounds, best of each (as for richardson_lucy): on a shared
        # machine the load drifts between one case's repeats and the next case's.
        fft_run, op_best, fft_best = wiener_stack_ffts(image, psf, len(reference.DEFAULT_SNR_DB)), math.inf, math.inf
        for _ in range(max(1, repeats)):
            op_best = min(op_best, time_ms(lambda: wiener_stack(image, psf), device, warmup=warmup, repeats=1))
            fft_best = min(fft_best, time_ms(fft_run, device, warmup=warmup, repeats=1))
    peer_name, peer = None, None
    try:
        from skimage.restoration import wiener as sk_wiener
    except ImportError:
        sk_wiener = None
    if sk_wiener is not None and cpu_peers:
        image_np, psf_np = image[0, 0].cpu().numpy(), psf.cpu().numpy()
        balances = [10 ** (-s / 10) for s in reference.DEFAULT_SNR_DB]
        peer_name = "skimage.restoration.wiener x15"
        peer = t(lambda: [sk_wiener(image_np, psf_np, b, clip=False) for b in balances])
    rows = [Row("wiener_stack", shape, "forward", custom, ref, peer_name, peer,
                note=f"op time / FFT-only time = {op_best / fft_best:.2f} (best of {max(1, repeats)} interleaved "
                     f"rounds: op {op_best:.2f} ms, its FFTs alone {fft_best:.2f} ms)")]
    image_g = image.clone().requires_grad_()
    rows.append(Row(
        "wiener_stack", shape, "forward+backward",
        t(_forward_backward(wiener_stack, [image_g], psf)),
        t(_forward_backward(reference.wiener_stack, [image_g], psf)),
    ))
    return rows


def wiener_stack_ffts(image: torch.Tensor, psf: torch.Tensor, n: int) -> Callable[[], None]:
    """The FFTs of one ``wiener_stack`` call and nothing else, as the op runs them: the image's and
    the PSF's rfftn on the reflect-padded grid, then the n inverse transforms, a group of filters at
    a time on the CPU (the op's grouping, csrc/wiener_stack.cpp), written into one new output."""
    from ..boundary import fft_pads

    grid = tuple(a + m + b for m, (a, b) in zip(image.shape[2:], fft_pads(tuple(image.shape[2:]), tuple(psf.shape))))
    dims = tuple(range(-len(grid), 0))
    padded = torch.rand(image.shape[:2] + grid, dtype=image.dtype, device=image.device)
    kernel = torch.zeros((1,) + grid, dtype=image.dtype, device=image.device)
    spectrum = torch.fft.rfftn(padded, dim=dims)
    per_plane = spectrum[0, 0].numel() * spectrum.element_size()
    group = n if image.device.type != "cpu" else max(1, min(n, (24 << 20) // per_plane))
    spectra = spectrum.unsqueeze(1).expand(-1, group, -1, *spectrum.shape[2:]).contiguous()

    def run():
        # A new output each call, as the op returns one (76 MB at 1024^2: its page faults are part
        # of any implementation's cost).
        out = torch.empty((image.shape[0], n) + image.shape[1:2] + grid, dtype=image.dtype, device=image.device)
        torch.fft.rfftn(padded, dim=dims)
        torch.fft.rfftn(kernel, dim=dims)
        for j in range(0, n, group):
            g = min(group, n - j)
            torch.fft.irfftn(spectra[:, :g], s=grid, dim=dims, out=out[:, j:j + g])
    return run


def bench_learnable_shrink(device, shape: tuple[int, ...], warmup: int, repeats: int) -> list[Row]:
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) * 0.6).to(device)
    values = (torch.linspace(-1, 1, 101).expand(shape[1], -1) * 0.9).contiguous().to(device)
    label = "x".join(map(str, shape)) + ", 101 knots"
    t = lambda fn: time_ms(fn, device, warmup=warmup, repeats=repeats)  # noqa: E731
    with torch.no_grad():
        rows = [Row("learnable_shrink", label, "forward",
                    t(lambda: learnable_shrink(x, values, (-1, 1))),
                    t(lambda: reference.learnable_shrink(x, values, (-1, 1))))]
    xg, vg = x.clone().requires_grad_(), values.clone().requires_grad_()
    rows.append(Row(
        "learnable_shrink", label, "forward+backward",
        t(_forward_backward(learnable_shrink, [xg, vg], (-1, 1))),
        t(_forward_backward(reference.learnable_shrink, [xg, vg], (-1, 1))),
    ))
    return rows


def nu_conv_by_filter(x, bank, idx, weights, *, mode="gather"):
    """NU-Conv in pure PyTorch by convolving with every filter in use, then picking per pixel.

    One ``conv2d`` with the U distinct filters of ``idx`` (zeros padding), then a gather (gather
    mode); or one ``conv2d`` over U masked copies of x (scatter mode). It is the fastest pure-PyTorch
    formulation when U is small, and the benchmark compares against the faster of it and
    :func:`deblur_ops.reference.nu_conv` (a loop over the taps).
    """
    b, c, h, w = x.shape
    _, kh, kw = bank.shape
    used, inverse = torch.unique(idx, return_inverse=True)
    filters = bank[used].flip(-2, -1)  # conv2d correlates: flip for convolution
    pad = (kh // 2, kw // 2)
    if mode == "gather":
        responses = F.conv2d(x.reshape(b * c, 1, h, w), filters[:, None], padding=pad)
        responses = responses.reshape(b, c, len(used), h, w)
        out = torch.zeros_like(x)
        for k in range(idx.shape[1]):
            pick = inverse[:, k, None, None].expand(b, c, 1, h, w)
            out = out + weights[:, k, None] * responses.gather(2, pick)[:, :, 0]
        return out
    masks = torch.zeros(weights.shape[0], len(used), h, w, dtype=x.dtype, device=x.device)
    masks = masks.scatter_add(1, inverse.expand(weights.shape[0], -1, -1, -1), weights)
    masked = (x[:, :, None] * masks[:, None]).reshape(b * c, len(used), h, w)
    return F.conv2d(masked, filters[None], padding=pad).reshape(b, c, h, w)


def smooth_motion_field(size: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lengths 5..25 px and angles 20..100 deg varying smoothly across a size x size image."""
    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size, dtype=torch.float64)
    phase = float(torch.rand((), generator=gen, dtype=torch.float64))
    length = 5 + 20 * (0.5 + 0.5 * torch.sin(2 * math.pi * (ramp[:, None] + phase))) * ramp[None, :]
    angle = 20 + 80 * (0.6 * ramp[None, :] + 0.4 * ramp[:, None])
    return length, angle


def bench_nu_conv(device, size: int, warmup: int, repeats: int) -> list[Row]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, size, size, generator=gen).to(device)
    bank, grid = motion_bank(lengths=range(1, 32, 2), size=31)
    idx, weights = motion_weights(*smooth_motion_field(size), grid)
    r = torch.arange(31, dtype=torch.float64) - 15
    sigmas = torch.linspace(1.5, 4.0, 25, dtype=torch.float64)
    gauss = torch.exp(-(r[None, :, None] ** 2 + r[None, None, :] ** 2) / (2 * sigmas[:, None, None] ** 2))
    gauss = (gauss / gauss.sum((1, 2), keepdim=True)).float()
    g_idx, g_weights = grid_weights((5, 5), (size, size))
    cases = [
        ("motion bank 31x31 (451 filters)", bank.to(device), idx.to(device), weights.float().to(device)),
        ("5x5 grid of Gaussian PSFs 31x31", gauss.to(device), g_idx.to(device), g_weights.float().to(device)),
    ]
    t = lambda fn: time_ms(fn, device, warmup=warmup, repeats=repeats)  # noqa: E731
    rows = []
    for label, bk, ix, wt in cases:
        k = ix.shape[1]
        work = 2 * size * size * k * bk.shape[1] * bk.shape[2] / 1e9
        shape = f"1x1x{size}x{size}, K={k}, {label}"
        for mode in ("gather", "scatter"):
            with torch.no_grad():
                custom = t(lambda: nu_conv(x, bk, ix, wt, mode=mode))
                loop = t(lambda: reference.nu_conv(x, bk, ix, wt, mode=mode))
                by_filter = t(lambda: nu_conv_by_filter(x, bk, ix, wt, mode=mode))
            best_name = "bench.nu_conv_by_filter" if by_filter < loop else "deblur_ops.reference"
            rows.append(Row("nu_conv", shape, f"{mode} forward", custom, min(by_filter, loop),
                            gflops=work, reference_impl=best_name))
            xg, bg, wg = x.clone().requires_grad_(), bk.clone().requires_grad_(), wt.clone().requires_grad_()

            def forward_backward(fn):
                def run():
                    for tt in (xg, bg, wg):
                        tt.grad = None
                    out = fn(xg, bg, ix, wg, mode=mode)
                    out.backward(torch.ones_like(out))
                return run
            # With autograd the baseline is always the by-filter formulation: the tap loop's backward
            # records ~kh*kw*K full-size tensors (tens of seconds and several GB at 512^2).
            rows.append(Row("nu_conv", shape, f"{mode} forward+backward", t(forward_backward(nu_conv)),
                            t(forward_backward(nu_conv_by_filter)), gflops=4 * work,
                            reference_impl="bench.nu_conv_by_filter"))
    return rows


def nu_conv_unfold(x, bank, idx, weights, *, mode="gather", rows: int = 32):
    """Pure-PyTorch NU-Conv (zeros padding) for per-pixel filters: ``F.unfold`` windows of ``rows``
    image rows at a time, multiplied by the local filters h_p = sum_k w_k bank[idx_k] formed for
    the same rows (gather); for scatter the weighted local filters are folded back onto the image.
    Each chunk is checkpointed so that its backward holds one chunk's windows at a time."""
    from torch.utils.checkpoint import checkpoint

    b, c, h, w = x.shape
    _, kh, kw = bank.shape
    rh, rw = kh // 2, kw // 2
    # gather correlates the window with the flipped filter; scatter's tap (a, b) lands at offset
    # (a - rh, b - rw) from its source, which is the filter as it is.
    flat = (bank if mode == "scatter" else bank.flip(-2, -1)).reshape(bank.shape[0], kh * kw)
    xp = F.pad(x, (rw, rw, rh, rh))

    def local_filters(r0, r1):  # (Bf, kh*kw, (r1 - r0) * w)
        i = idx[:, :, r0:r1].long().flatten(2)
        return (weights[:, :, r0:r1].flatten(2)[:, :, None] * flat[i].permute(0, 1, 3, 2)).sum(1)

    def gather_rows(r0, r1):
        cols = F.unfold(xp[:, :, r0:r1 + 2 * rh], (kh, kw)).view(b, c, kh * kw, -1)
        return (cols * local_filters(r0, r1)[:, None]).sum(2).view(b, c, r1 - r0, w)

    def scatter_rows(r0, r1):
        src = x[:, :, r0:r1].flatten(2)[:, :, None] * local_filters(r0, r1)[:, None]
        return F.fold(src.reshape(b, c * kh * kw, -1), (r1 - r0 + 2 * rh, w + 2 * rw), (kh, kw))

    def chunk(fn, r0):
        r1 = min(h, r0 + rows)
        if torch.is_grad_enabled():
            return checkpoint(fn, r0, r1, use_reentrant=False)
        return fn(r0, r1)

    if mode == "gather":
        return torch.cat([chunk(gather_rows, r0) for r0 in range(0, h, rows)], 2)
    out = x.new_zeros(b, c, h + 2 * rh, w + 2 * rw)
    for r0 in range(0, h, rows):
        out = out + F.pad(chunk(scatter_rows, r0), (0, 0, r0, max(0, h - r0 - rows)))
    return out[:, :, rh:rh + h, rw:rw + w]


def bench_nu_conv_per_pixel(device, size: int, warmup: int, repeats: int, *, filters: int = 511,
                            ksize: int = 31) -> list[Row]:
    """NU-Conv with a filter index that changes at every pixel (kernel-prediction networks, learned
    per-pixel filter choice): K=4 random indices into ``filters`` dense ksize x ksize filters.

    Custom is the path the cost model picks; the reference is the chunked ``F.unfold`` formulation
    (:func:`nu_conv_unfold`, with checkpointed autograd for forward+backward); the peer is the run
    loop (``DEBLUR_NU_CONV_PATH=runs``), which was the only CPU path before the pixel path.
    """
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, size, size, generator=gen).to(device)
    bank = (torch.rand(filters, ksize, ksize, generator=gen) / ksize**2).to(device)
    idx = torch.randint(0, filters, (1, 4, size, size), generator=gen).to(device)
    weights = torch.rand(1, 4, size, size, generator=gen).to(device)
    work = 2 * size * size * 4 * ksize * ksize / 1e9
    shape = f"1x1x{size}x{size}, K=4, per-pixel idx, {filters} dense {ksize}x{ksize} filters"
    t = lambda fn: time_ms(fn, device, warmup=warmup, repeats=repeats)  # noqa: E731
    rows = []
    for mode in ("gather", "scatter"):
        chosen = torch.ops.deblur_ops.nu_conv_path(x, bank, idx, weights, mode, "zeros") if _extension.LOADED else "reference"
        with torch.no_grad():
            custom = t(lambda: nu_conv(x, bank, idx, weights, mode=mode))
            unfold = t(lambda: nu_conv_unfold(x, bank, idx, weights, mode=mode))
            with _forced_nu_conv_path("runs"):  # ~40x slower than the pixel path: timed once
                runs = time_ms(lambda: nu_conv(x, bank, idx, weights, mode=mode), device, warmup=0, repeats=1)
        rows.append(Row("nu_conv", f"{shape}, path {chosen}", f"{mode} forward", custom, unfold,
                        peer="run loop (forced)", peer_ms=runs, gflops=work,
                        reference_impl="bench.nu_conv_unfold"))
        leaves = [x.clone().requires_grad_(), bank.clone().requires_grad_(), weights.clone().requires_grad_()]

        def forward_backward(fn):
            def run():
                for leaf in leaves:
                    leaf.grad = None
                out = fn(leaves[0], leaves[1], idx, leaves[2], mode=mode)
                out.backward(torch.ones_like(out))
            return run
        rows.append(Row("nu_conv", f"{shape}, path {chosen}", f"{mode} forward+backward",
                        t(forward_backward(nu_conv)), t(forward_backward(nu_conv_unfold)),
                        gflops=4 * work, reference_impl="bench.nu_conv_unfold"))
    return rows


class _forced_nu_conv_path:
    """Sets DEBLUR_NU_CONV_PATH (read by the compiled kernels at each call) for a with-block."""

    def __init__(self, path: str):
        self.path, self.saved = path, None

    def __enter__(self):
        self.saved = os.environ.get("DEBLUR_NU_CONV_PATH")
        os.environ["DEBLUR_NU_CONV_PATH"] = self.path

    def __exit__(self, *exc):
        if self.saved is None:
            os.environ.pop("DEBLUR_NU_CONV_PATH", None)
        else:
            os.environ["DEBLUR_NU_CONV_PATH"] = self.saved


def attainable_gflops(device) -> float:
    """fp32 GFLOP/s of a large matrix product: what the BLAS attains on this machine."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.rand(n, n, device=device)
    b = torch.rand(n, n, device=device)
    return 2 * n**3 / time_ms(lambda: a @ b, device, warmup=1, repeats=3) / 1e6


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def device_slug(name: str) -> str:
    """A device name as a file-name part: ``"AMD EPYC (2 threads)"`` -> ``"amd-epyc-2-threads"``."""
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return slug


def bench_irc_net(device, warmup: int, repeats: int, shape=(375, 500)) -> list[Row]:
    """The shipped IRC-Net on a 375 x 500 RGB photo (paper 004's runtime setting) against NU-CG.

    Two blurs: a uniform 21 px motion PSF and a camera-motion field (the learned motion bank).
    The reference column is ``nu_cg`` (paper 004's NU-CG baseline, default iterations) on the same
    input, so "custom vs reference" is the speed-up the paper reports (300x on its GPU).
    """
    from ..models.methods import cached_model
    from ..restore.nu_cg import nu_cg

    h, w = shape
    net = cached_model("irc-motion", device)
    rows = []
    for label, blur, observed in _photo_cases(device, shape):
        with torch.no_grad():
            custom = time_ms(lambda: net(observed, blur, noise_sigma=0.01), device, warmup=warmup, repeats=repeats)
            ref = time_ms(lambda: nu_cg(observed, blur, noise_sigma=0.01), device, warmup=0, repeats=1)
        rows.append(Row("irc_net", f"1x3x{h}x{w}, {label}", "inference", custom, ref,
                        reference_impl="nu_cg (paper 004 NU-CG)"))
    return rows


def _photo_cases(device, shape):
    """The astronaut photo cut to ``shape`` (RGB) under a uniform 21 px motion and a camera-motion
    field: [(label, blur, observed)], the blurs as the methods take them."""
    from ..data import sample_image, to_batch
    from ..psf import MotionField

    h, w = shape
    image = to_batch(sample_image("astronaut")[:h, :w]).to(device)
    kernel = linear_motion_kernel(min(21, min(h, w) // 3), 30).to(device)
    r = kernel.shape[-1] // 2
    uniform = F.conv2d(F.pad(image, (r, r, r, r), mode="reflect"), kernel.flip(-2, -1).expand(3, 1, *kernel.shape), groups=3)
    field = MotionField.from_camera_motion((h, w), (6.0, 3.0), 2.0)
    return [("uniform motion 21 px", kernel, uniform),
            ("camera-motion field", field, field.blur(image.cpu()).to(device))]


def bench_irc(device, warmup: int, repeats: int, shape=(375, 500)) -> list[Row]:
    """The untrained ``irc`` solver (grid preconditioner, default) against NU-CG, with the paper's
    eq. 17 inverse (``inverse="bank"``) as the peer, on a 375 x 500 RGB photo (default settings)."""
    from ..restore.irc import irc
    from ..restore.nu_cg import nu_cg

    rows = []
    for label, blur, observed in _photo_cases(device, shape):
        with torch.no_grad():
            custom = time_ms(lambda: irc(observed, blur, noise_sigma=0.01), device, warmup=warmup, repeats=repeats)
            peer = time_ms(lambda: irc(observed, blur, noise_sigma=0.01, inverse="bank"), device, warmup=1, repeats=1)
            ref = time_ms(lambda: nu_cg(observed, blur, noise_sigma=0.01), device, warmup=0, repeats=1)
        rows.append(Row("irc", f"1x3x{shape[0]}x{shape[1]}, {label}", "inference", custom, ref,
                        peer="irc inverse='bank' (paper 004 eq. 17)", peer_ms=peer,
                        reference_impl="nu_cg (paper 004 NU-CG)"))
    return rows


def bead_filament_volume(shape=(32, 256, 256), *, margin=(6, 5, 5), seed=0) -> torch.Tensor:
    """A pollen-like test scene: beads and curved filaments, extending ``margin`` beyond ``shape``
    on each side (so that its blur enters the field from outside, as in real data); float64."""
    gen = torch.Generator().manual_seed(seed)
    full = [n + 2 * m for n, m in zip(shape, margin)]
    scene = torch.zeros(full, dtype=torch.float64)
    d, h, w = full
    for _ in range(max(8, h * w // 400)):
        z, y, x = (int(torch.randint(1, n - 1, (1,), generator=gen)) for n in full)
        scene[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] += 20 + 80 * float(torch.rand(1, generator=gen))
    t = torch.linspace(0, 1, 4 * max(h, w), dtype=torch.float64)
    for _ in range(max(4, h // 32)):
        a = torch.rand(6, generator=gen, dtype=torch.float64)
        zs = ((0.2 + 0.6 * a[0]) * d + 0.2 * d * torch.sin(2 * math.pi * (t + a[1]))).long().clamp(0, d - 1)
        ys = (a[2] * h + (0.5 - a[3]) * h * t).long().clamp(0, h - 1)
        xs = (t * w + 0.1 * w * torch.sin(6 * math.pi * t * a[4])).long().clamp(0, w - 1)
        scene[zs, ys, xs] = 30 + 30 * float(a[5])
    return scene


def plain_torch_richardson_lucy(image: torch.Tensor, psf: torch.Tensor, iterations: int) -> torch.Tensor:
    """The Richardson-Lucy of sdeconv 1.0.4 (``SRichardsonLucy._deconv_3d`` with ``pad=0``) in plain
    torch, the peer of the benchmark: circular, complex ``fftn`` on the image grid, start from the
    image. Two differences: a 1e-12 floor under the division (without it, sdeconv's gives NaN
    wherever a PSF-sized neighbourhood of Poisson data is all zero, as between beads), and the
    exact adjoint conj(OTF): sdeconv builds it as the FFT of the rolled PSF flipped over axes 0
    and 1 without re-centring, which shifts the correction by one voxel in z and y every
    iteration; the peer here does not inherit that."""
    dims = tuple(range(image.dim()))
    padded = torch.zeros_like(image)
    padded[tuple(slice(0, k) for k in psf.shape)] = psf / psf.sum()
    rolled = torch.roll(padded, [-(k // 2) for k in psf.shape], dims)
    otf = torch.fft.fftn(rolled)
    otf_mirror = torch.fft.fftn(torch.roll(torch.flip(rolled, dims), [1] * len(dims), dims))
    out = image.clone()
    for _ in range(iterations):
        blurred = torch.real(torch.fft.ifftn(torch.fft.fftn(out) * otf)).clamp(min=1e-12)
        out = out * torch.real(torch.fft.ifftn(torch.fft.fftn(image / blurred) * otf_mirror))
    return out


def bench_richardson_lucy(device, warmup: int, repeats: int, shape=(32, 256, 256), iterations: int = 30) -> list[Row]:
    """3D Richardson-Lucy on a bead-and-filament volume under a Gaussian widefield-like PSF
    (13 x 11 x 11, sigma 2.5 / 1.5 / 1.5 px) with Poisson noise (peak ~100 photons).

    Rows: per-iteration time of ``richardson_lucy`` (default ``padding="extended"``; the run of N
    iterations over N, setup included) against its 4 FFTs alone on the same grid (N iterations'
    worth in one timed run, over N), and against the
    plain-torch peer; the whole run with PSNRs of ours, the peer's and the input (against the
    scene, data range = scene maximum); and the fewest iterations of ours whose PSNR reaches the
    peer's after N, timed against the peer's N. Each time is the best of ``repeats`` interleaved
    rounds.
    """
    from scipy.signal import fftconvolve

    from ..restore.richardson_lucy import RLDomain, richardson_lucy

    margin = (6, 5, 5)
    scene_full = bead_filament_volume(shape, margin=margin)
    axes = torch.meshgrid(*[torch.arange(k, dtype=torch.float64) - k // 2 for k in (13, 11, 11)], indexing="ij")
    psf64 = torch.exp(-sum(a**2 / (2 * s**2) for a, s in zip(axes, (2.5, 1.5, 1.5))))
    psf64 = psf64 / psf64.sum()
    blurred = torch.from_numpy(fftconvolve(scene_full.numpy(), psf64.numpy(), mode="same")).clamp(min=0)
    inner = tuple(slice(m, m + n) for m, n in zip(margin, shape))
    gen = torch.Generator().manual_seed(1)
    observed = torch.poisson(blurred[inner], generator=gen).float().to(device)
    scene = scene_full[inner].float().to(device)
    psf = psf64.float().to(device)
    batch = observed[None, None]
    label = "x".join(map(str, shape)) + ", PSF 13x11x11"
    domain = RLDomain(batch, psf[None], "extended")
    x = torch.rand((1, 1) + domain.shape, device=device) + 0.5

    # The FFTs of all the iterations in one timed run, as long as the run of ours: on a shared
    # machine a run of seconds is always interrupted by other processes and one of tens of
    # milliseconds sometimes not, so the best of short runs against the best of long ones
    # overstates the ratio (one thread at load ~4.5: 1.55x that way, 1.17x in CPU time).
    def ffts():
        for _ in range(2 * iterations):
            torch.fft.irfftn(torch.fft.rfftn(x, dim=domain.dims), s=domain.shape, dim=domain.dims)

    peak = float(scene.max())

    def psnr(a):
        return 10 * math.log10(peak**2 / float(((a.double() - scene.double()) ** 2).mean()))

    # Ours reaches the peer's final PSNR after fewer iterations (its boundary model rings less):
    # the fewest that do, found on one untimed run.
    with torch.no_grad():
        peer = plain_torch_richardson_lucy(observed, psf, iterations)
        trajectory = []
        richardson_lucy(batch, psf, iterations=iterations, callback=lambda i, x: trajectory.append(psnr(x[0, 0])))
    to_peer = next((i + 1 for i, p in enumerate(trajectory) if p >= psnr(peer)), None)
    cases = {
        "ours": lambda: richardson_lucy(batch, psf, iterations=iterations),
        "ours_to_peer": lambda: richardson_lucy(batch, psf, iterations=to_peer or iterations),
        "ffts": ffts,
        "circular": lambda: richardson_lucy(batch, psf, iterations=iterations, padding="circular"),

        "peer": lambda: plain_torch_richardson_lucy(observed, psf, iterations),
    }
    # Interleaved rounds, best of each: on a shared CPU the load drifts during a run, and the
    # minimum is the least disturbed sample of every case alike.
    best = {name: math.inf for name in cases}
    with torch.no_grad():
        for _ in range(max(1, repeats)):
            for name, fn in cases.items():
                best[name] = min(best[name], time_ms(fn, device, warmup=warmup, repeats=1))
        ours = richardson_lucy(batch, psf, iterations=iterations)[0, 0]
        circular = richardson_lucy(batch, psf, iterations=iterations, padding="circular")[0, 0]
    ours_total, fft_ms, peer_total = best["ours"], best["ffts"] / iterations, best["peer"]
    # Whole runs over the iteration count: each method's setup (OTFs, padding, the normaliser) is
    # included, spread over the iterations, which keeps the figure positive on tiny noisy runs.
    per_iteration = best["ours"] / iterations
    peer_per_iteration = best["peer"] / iterations
    circular_per_iteration = best["circular"] / iterations
    grid = "x".join(map(str, domain.shape))
    return [
        Row("richardson_lucy", label, "per iteration", per_iteration, fft_ms,
            peer="plain-torch RL (sdeconv 1.0.4 algorithm, circular)", peer_ms=peer_per_iteration,
            reference_impl=f"its 4 FFTs alone (rfftn/irfftn, {grid} grid)",
            note=f"per-iteration time / FFT-only time = {per_iteration / fft_ms:.2f}"),
        Row("richardson_lucy", label, f"{iterations} iterations", ours_total, fft_ms * iterations,
            peer="plain-torch RL (sdeconv 1.0.4 algorithm, circular)", peer_ms=peer_total,
            reference_impl="FFT-only time x iterations",
            note=f"PSNR ours {psnr(ours):.2f} dB, peer {psnr(peer):.2f} dB, input {psnr(observed):.2f} dB"),
        Row("richardson_lucy", label, f"to the peer's {iterations}-iteration PSNR",
            best["ours_to_peer"], fft_ms * (to_peer or iterations),
            peer="plain-torch RL (sdeconv 1.0.4 algorithm, circular)", peer_ms=peer_total,
            reference_impl="FFT-only time x iterations",
            note=(f"PSNR ours after {to_peer} iterations {trajectory[to_peer - 1]:.2f} dB >= peer after {iterations} "
                  f"{psnr(peer):.2f} dB" if to_peer else f"ours never reaches the peer's {psnr(peer):.2f} dB")),
        # The peer's grid and boundary: the same FFT sizes, so this row compares the iterations alone.
        Row("richardson_lucy", label, "per iteration, padding='circular'", circular_per_iteration, fft_ms,
            peer="plain-torch RL (sdeconv 1.0.4 algorithm, circular)", peer_ms=peer_per_iteration,
            reference_impl=f"FFT-only time of the default ({grid} grid)",
            note=f"PSNR after {iterations} iterations {psnr(circular):.2f} dB"),
    ]


def run(ops=OPS, device="cpu", size: int = 1024, shrink_shape=(8, 64, 256, 256),
        nu_conv_size: int = 512, warmup: int = 2, repeats: int = 5, irc_shape=(375, 500),
        cpu_peers: bool = True, rl_shape=(32, 256, 256)) -> dict:
    """Run the selected benchmarks; returns a JSON-serialisable report.

    ``cpu_peers=False`` leaves out the peers that run on the CPU whatever ``device`` is
    (skimage's Wiener, 15 filters per call, took 7 s per filter at 2048^2 on a 2-core machine).
    """
    unknown = set(ops) - set(OPS)
    if unknown:
        raise ValueError(f"unknown ops {sorted(unknown)}; choose from {list(OPS)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
    rows: list[Row] = []
    if "wiener_stack" in ops:
        rows += bench_wiener_stack(dev, size, warmup, repeats, cpu_peers)
    if "learnable_shrink" in ops:
        rows += bench_learnable_shrink(dev, tuple(shrink_shape), warmup, repeats)
    if "nu_conv" in ops:
        rows += bench_nu_conv(dev, nu_conv_size, warmup, repeats)
        rows += bench_nu_conv_per_pixel(dev, nu_conv_size, warmup, repeats)
    if "irc_net" in ops:
        rows += bench_irc_net(dev, warmup, repeats, tuple(irc_shape))
    if "irc" in ops:
        rows += bench_irc(dev, warmup, repeats, tuple(irc_shape))
    if "richardson_lucy" in ops:
        rows += bench_richardson_lucy(dev, warmup, repeats, tuple(rl_shape))
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(dev),
        "device_type": dev.type,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "threads": torch.get_num_threads(),
        # Other processes on the machine skew CPU timings; the 1-minute load average says how busy
        # it was when the run ended.
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        # Whether idle OpenMP threads spin (the default) or sleep: on a machine with more runnable
        # threads than cores the spinning ones take the cores from the working ones, which slows
        # short parallel regions (element-wise passes) far more than long ones (FFTs).
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "backend": _extension.backend(dev),
        "warmup": warmup,
        "repeats": repeats,
        "matmul_gflops": attainable_gflops(dev),
        "rows": [dict(asdict(r), speedup_vs_reference=r.speedup_vs_reference,
                      speedup_vs_peer=r.speedup_vs_peer,
                      gflops_per_s=None if r.gflops is None else r.gflops / r.custom_ms * 1e3)
                 for r in rows],
    }


def markdown(report: dict) -> str:
    lines = [
        f"# deblur bench — {report['device']}",
        "",
        f"{report['date']}, torch {report['torch']}, backend {report['backend']}, load average "
        f"{report['load_average']}, OMP_WAIT_POLICY {report.get('omp_wait_policy') or 'unset'}, median of "
        f"{report['repeats']} after {report['warmup']} warm-up runs. fp32 matmul attains "
        f"{report['matmul_gflops']:.0f} GFLOP/s here (the practical FMA ceiling).",
        "",
        "| op | shape | pass | custom ms | reference | reference ms | custom vs reference | peer | peer ms | custom vs peer | GFLOP/s |",
        "|---|---|---|---:|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in report["rows"]:
        peer_ms = "" if r["peer_ms"] is None else f"{r['peer_ms']:.2f}"
        peer_x = "" if r["speedup_vs_peer"] is None else f"{r['speedup_vs_peer']:.1f}x"
        lines.append(
            f"| {r['op']} | {r['shape']} | {r['pass_']} | {r['custom_ms']:.2f} | "
            f"{r['reference_impl']} | {r['reference_ms']:.2f} | {r['speedup_vs_reference']:.2f}x | {r['peer'] or ''} | "
            f"{peer_ms} | {peer_x} | {'' if r['gflops_per_s'] is None else format(r['gflops_per_s'], '.1f')} |"
        )
    notes = [f"- {r['op']} {r['shape']} ({r['pass_']}): {r['note']}" for r in report["rows"] if r.get("note")]
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


def save(report: dict, directory: str | Path) -> list[Path]:
    """Write ``<date>_<device>.json`` and ``.md`` into ``directory``; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"{report['date'][:10]}_{device_slug(report['device'])}"
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    return paths
