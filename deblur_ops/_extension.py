"""Loads the compiled extension ``deblur_ops._C`` and records which op has a kernel on which device.

Set ``DEBLUR_OPS_NO_EXTENSION=1`` to ignore the extension and run the pure-PyTorch references.
"""
from __future__ import annotations

import os

import torch

OPS = ("wiener_stack", "learnable_shrink", "nu_conv", "richardson_lucy_ratio_", "richardson_lucy_update_")
DEVICE_KEYS = {"cpu": "CPU", "cuda": "CUDA"}

LOADED = False
LOAD_ERROR: str | None = None
if os.environ.get("DEBLUR_OPS_NO_EXTENSION", "0") not in ("", "0"):
    LOAD_ERROR = "disabled by DEBLUR_OPS_NO_EXTENSION"
else:
    try:
        from . import _C  # noqa: F401  (registers torch.ops.deblur_ops.*)

        LOADED = True
    except ImportError as exc:
        LOAD_ERROR = f"{type(exc).__name__}: {exc}"


def _kernels(op: str) -> frozenset:
    # An extension built before an op was added lacks its schema: that op runs its reference.
    if not LOADED or not hasattr(torch.ops.deblur_ops, op):
        return frozenset()
    name = f"deblur_ops::{op}"
    return frozenset(
        dev for dev, key in DEVICE_KEYS.items()
        if torch._C._dispatch_has_kernel_for_dispatch_key(name, key)
    )


# Read once: a constant dict lookup is cheap in eager mode and traceable by torch.compile.
KERNELS = {op: _kernels(op) for op in OPS}


def has_kernel(op: str, device: torch.device) -> bool:
    return device.type in KERNELS[op]


def backend(device="cpu") -> dict:
    """Which implementation each op uses on ``device``: ``"extension"`` or ``"reference"``."""
    dev = torch.device(device)
    return {op: "extension" if has_kernel(op, dev) else "reference" for op in OPS}
