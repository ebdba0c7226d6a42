"""Running a blind restoration network on images of any size, channel count and value range.

The networks of papers 002 and 003 downsample by powers of two and were trained on [0, 1] grey
patches; :func:`run_blind` pads (mirror) to the network's multiple, folds colour channels into the
batch when the weights are single-channel, maps the values into [0, 1] and undoes all three.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import validation as v


def check_network_input(x: torch.Tensor, channels: int, multiple: int, name: str = "image") -> None:
    """Checks for the input of a network's ``forward``: (B, channels, H, W) with H, W multiples of ``multiple``.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: wrong rank, channel count, dtype, or sizes that are not multiples of ``multiple``.
    """
    v.require_tensor(x, name)
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, {channels}, H, W) for this network, got shape "
                         f"{tuple(x.shape)}; add missing batch/channel dims with {name}[None, None] (grey)")
    v.require_float(x, name)
    v.require_nonempty(x, name)
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(f"{name} height and width must be multiples of {multiple} for this network, got "
                         f"{h}x{w}; pad it (deblur_ops.deblur and the method functions pad and crop back for you)")


def run_blind(network: torch.nn.Module, image: torch.Tensor, *, multiple: int, margin: int = 0) -> torch.Tensor:
    """Restore ``image`` with a blind network that maps a [0, 1] (B, c, H, W) batch to the same shape.

    Steps: values are mapped into [0, 1] with lo = min(0, min(image)), hi = max(1, max(image)) per
    item (the identity for images already in [0, 1]); a network with single-channel weights runs
    every channel as its own batch item; the planes are mirror-padded by ``margin`` and then up to
    a multiple of ``multiple`` (edge-replicated where the image is too small to mirror), and the
    result is cropped and mapped back.

    Args:
        network: module with attributes ``channels`` (1, or the image's channel count).
        image: (B, C, H, W) float tensor.
        multiple: the network needs H and W divisible by this.
        margin: extra mirrored border so that the network's own zero padding stays off the image.

    Returns:
        float tensor of ``image``'s shape and dtype.

    Raises:
        TypeError: ``image`` is not a tensor.
        ValueError: not (B, C, H, W), not floating point, empty, NaN/Inf, or a channel count the
            network cannot take.

    Example:
        >>> import torch
        >>> class Half(torch.nn.Module):
        ...     channels = 1
        ...     def forward(self, x):
        ...         return x / 2
        >>> run_blind(Half(), torch.ones(1, 3, 5, 7), multiple=4).shape
        torch.Size([1, 3, 5, 7])
    """
    v.require_tensor(image, "image")
    if image.dim() != 4:
        raise ValueError(f"image must have shape (B, C, H, W) (a 2D image; volumes are not supported by the "
                         f"blind networks), got shape {tuple(image.shape)}; use image[None, None] for one grey plane")
    v.require_float(image, "image")
    v.require_nonempty(image, "image")
    v.require_finite(image, "image")
    b, c, h, w = image.shape
    if network.channels not in (1, c):
        raise ValueError(f"this network takes 1 or {network.channels} channels, got an image with {c} channels; "
                         f"pass a grey (B, 1, H, W) or colour (B, {network.channels}, H, W) image")
    flat = image.reshape(b, -1)
    lo = flat.amin(1).clamp(max=0).reshape(b, 1, 1, 1)
    hi = flat.amax(1).clamp(min=1).reshape(b, 1, 1, 1)
    x = (image - lo) / (hi - lo)
    if network.channels == 1:
        x = x.reshape(b * c, 1, h, w)
    pad_h, pad_w = -(h + 2 * margin) % multiple, -(w + 2 * margin) % multiple
    pads = (margin, margin + pad_w, margin, margin + pad_h)
    mode = "reflect" if max(pads[:2]) < w and max(pads[2:]) < h else "replicate"
    x = F.pad(x, pads, mode=mode)
    param = next(network.parameters(), None)
    dtype = param.dtype if param is not None else x.dtype
    y = network(x.to(dtype)).to(image.dtype)[..., margin:margin + h, margin:margin + w]
    return y.reshape(b, c, h, w) * (hi - lo) + lo
