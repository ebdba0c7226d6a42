"""How many bytes a restoration may use on a device, and a loop that splits work to fit them.

CUDA runs are sized from the free device memory (``torch.cuda.mem_get_info``); on the host a
budget applies only where a caller asks for one (Richardson-Lucy: half of ``MemAvailable``) or
where ``DEBLUR_MEMORY_BUDGET`` (bytes) is set, which also overrides the CUDA figure.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch

ENV = "DEBLUR_MEMORY_BUDGET"
# Of the free CUDA memory, the share a run plans for: the caching allocator's fragmentation and
# cuFFT's plans take the rest.
CUDA_FRACTION = 0.8

T = TypeVar("T")


def memory_budget(device: torch.device, *, host_default: bool = False) -> int | None:
    """Bytes a run may use on ``device``, or None for no limit.

    ``DEBLUR_MEMORY_BUDGET`` when set; else on CUDA 80 % of the free memory; on the host half of
    ``MemAvailable`` (4 GiB when it cannot be read) with ``host_default``, else None.
    """
    if os.environ.get(ENV):
        try:
            return int(float(os.environ[ENV]))
        except ValueError:
            raise ValueError(f"{ENV} must be a number of bytes, got {os.environ[ENV]!r}") from None
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(CUDA_FRACTION * free)
    if not host_default:
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 4 << 30


def retry_smaller(run: Callable[[tuple[int, ...]], T], parts: tuple[int, ...], device: torch.device) -> T:
    """``run(parts)``, and on ``torch.OutOfMemoryError`` again with the first entry of ``parts``
    greater than 1 halved (rounded up), until all are 1; then the error is raised.

    ``parts`` are the sizes of the pieces the work is cut into (e.g. items per call, filters per
    call), most preferred to shrink first.
    """
    parts = tuple(parts)
    while True:
        try:
            return run(parts)
        except torch.OutOfMemoryError:
            shrink = next((i for i, p in enumerate(parts) if p > 1), None)
            if shrink is None:
                raise
            parts = parts[:shrink] + ((parts[shrink] + 1) // 2,) + parts[shrink + 1:]
            if device.type == "cuda":
                torch.cuda.empty_cache()
