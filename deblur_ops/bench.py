"""`deblur bench`: custom ops vs their pure-PyTorch references vs peer libraries, in one process.

Each case is timed after warm-up as the median of repeats (CUDA: events after synchronising), on
random non-zero data. Ratios are reference time / custom time (> 1 means the custom op is faster).
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import _extension, reference
from .ops import learnable_shrink, wiener_stack
from .psf import linear_motion_kernel

OPS = ("wiener_stack", "learnable_shrink")


@dataclass
class Row:
    op: str
    shape: str
    pass_: str
    custom_ms: float
    reference_ms: float
    peer: str | None = None
    peer_ms: float | None = None

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


def bench_wiener_stack(device, size: int, warmup: int, repeats: int) -> list[Row]:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, size, size, generator=gen).to(device)
    psf = linear_motion_kernel(21, 30, 31).to(device)
    shape = f"1x1x{size}x{size}, psf 31x31, 15 SNRs"
    t = lambda fn: time_ms(fn, device, warmup=warmup, repeats=repeats)  # noqa: E731
    with torch.no_grad():
        custom = t(lambda: wiener_stack(image, psf))
        ref = t(lambda: reference.wiener_stack(image, psf))
    peer_name, peer = None, None
    try:
        from skimage.restoration import wiener as sk_wiener
    except ImportError:
        sk_wiener = None
    if sk_wiener is not None:
        image_np, psf_np = image[0, 0].cpu().numpy(), psf.cpu().numpy()
        balances = [10 ** (-s / 10) for s in reference.DEFAULT_SNR_DB]
        peer_name = "skimage.restoration.wiener x15"
        peer = t(lambda: [sk_wiener(image_np, psf_np, b, clip=False) for b in balances])
    rows = [Row("wiener_stack", shape, "forward", custom, ref, peer_name, peer)]
    image_g = image.clone().requires_grad_()
    rows.append(Row(
        "wiener_stack", shape, "forward+backward",
        t(_forward_backward(wiener_stack, [image_g], psf)),
        t(_forward_backward(reference.wiener_stack, [image_g], psf)),
    ))
    return rows


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


def run(ops=OPS, device="cpu", size: int = 1024, shrink_shape=(8, 64, 256, 256), warmup: int = 2,
        repeats: int = 5) -> dict:
    """Run the selected benchmarks; returns a JSON-serialisable report."""
    unknown = set(ops) - set(OPS)
    if unknown:
        raise ValueError(f"unknown ops {sorted(unknown)}; choose from {list(OPS)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
    rows: list[Row] = []
    if "wiener_stack" in ops:
        rows += bench_wiener_stack(dev, size, warmup, repeats)
    if "learnable_shrink" in ops:
        rows += bench_learnable_shrink(dev, tuple(shrink_shape), warmup, repeats)
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(dev),
        "device_type": dev.type,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "threads": torch.get_num_threads(),
        "backend": _extension.backend(dev),
        "warmup": warmup,
        "repeats": repeats,
        "rows": [dict(asdict(r), speedup_vs_reference=r.speedup_vs_reference,
                      speedup_vs_peer=r.speedup_vs_peer) for r in rows],
    }


def markdown(report: dict) -> str:
    lines = [
        f"# deblur bench — {report['device']}",
        "",
        f"{report['date']}, torch {report['torch']}, backend {report['backend']}, median of "
        f"{report['repeats']} after {report['warmup']} warm-up runs.",
        "",
        "| op | shape | pass | custom ms | reference ms | custom vs reference | peer | peer ms | custom vs peer |",
        "|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in report["rows"]:
        peer_ms = "" if r["peer_ms"] is None else f"{r['peer_ms']:.2f}"
        peer_x = "" if r["speedup_vs_peer"] is None else f"{r['speedup_vs_peer']:.1f}x"
        lines.append(
            f"| {r['op']} | {r['shape']} | {r['pass_']} | {r['custom_ms']:.2f} | "
            f"{r['reference_ms']:.2f} | {r['speedup_vs_reference']:.2f}x | {r['peer'] or ''} | "
            f"{peer_ms} | {peer_x} |"
        )
    return "\n".join(lines) + "\n"


def save(report: dict, directory: str | Path) -> list[Path]:
    """Write ``<date>_<device>.json`` and ``.md`` into ``directory``; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in report["device"].lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    stem = directory / f"{report['date'][:10]}_{slug}"
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    return paths
