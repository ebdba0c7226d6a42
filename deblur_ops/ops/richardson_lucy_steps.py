"""Richardson-Lucy's element-wise steps as in-place ops, one pass over memory each.

An iteration is four FFTs and these two steps; fused, the steps cost two passes instead of five
(see ``deblur bench --ops richardson_lucy``). They run inside the iteration on tensors that need
no gradient, so no autograd formula is registered.
"""
from __future__ import annotations

import torch

from .. import _extension
from .. import reference as ref


def _compiled(name: str, target: torch.Tensor, *others: torch.Tensor | None, per_item: torch.Tensor | None = None) -> bool:
    """Whether the compiled kernel takes these tensors: contiguous float32/float64 of one dtype and
    device, ``others`` of the target's shape, ``per_item`` of shape (P, 1, *S) with P in {1, B}.
    Anything else (broadcasting, strides, autograd) goes to the reference."""
    tensors = [t for t in (target, *others, per_item) if t is not None]
    if not (_extension.has_kernel(name, target.device) and target.dtype in (torch.float32, torch.float64)
            and target.dim() >= 2):
        return False
    if any(t.dtype != target.dtype or t.device != target.device or not t.is_contiguous() for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    if any(t is not None and t.shape != target.shape for t in others):
        return False
    return per_item is None or (per_item.dim() == target.dim() and per_item.shape[0] in (1, target.shape[0])
                                and per_item.shape[1] == 1 and per_item.shape[2:] == target.shape[2:])


def richardson_lucy_ratio_(blurred: torch.Tensor, observed: torch.Tensor, background: torch.Tensor | None,
                           floor: float) -> torch.Tensor:
    """``blurred <- observed / max(blurred + background, floor)`` in place; returns ``blurred``.

    Args:
        blurred: (B, C, *S), H x; overwritten with the ratio.
        observed: (B, C, *S), y.
        background: (B, C, *S) or None (0).
        floor: the smallest denominator (> 0), which keeps the ratio finite where H x + b is 0.

    Example:
        >>> h = torch.tensor([[[2.0, 0.0]]]); richardson_lucy_ratio_(h, torch.ones(1, 1, 2), None, 0.5)
        tensor([[[0.5000, 2.0000]]])
    """
    if _compiled("richardson_lucy_ratio_", blurred, observed, background):
        torch.ops.deblur_ops.richardson_lucy_ratio_(blurred, observed, background, float(floor))
    else:
        ref.richardson_lucy_ratio_(blurred, observed, background, floor)
    return blurred


def richardson_lucy_update_(correction: torch.Tensor, estimate: torch.Tensor,
                            factor: torch.Tensor | None) -> torch.Tensor:
    """``correction <- estimate * max(correction, 0) * factor`` in place; returns ``correction``.

    Args:
        correction: (B, C, *S), H^T(y / (H x + b)); overwritten with the new estimate.
        estimate: (B, C, *S), x.
        factor: (P, 1, *S) with P in {1, B} (1 / H^T 1, 0 outside the unknowns), or None (1).

    Example:
        >>> u = torch.tensor([[[2.0, -1.0]]]); richardson_lucy_update_(u, torch.full((1, 1, 2), 3.0), None)
        tensor([[[6., 0.]]])
    """
    if _compiled("richardson_lucy_update_", correction, estimate, per_item=factor):
        torch.ops.deblur_ops.richardson_lucy_update_(correction, estimate, factor)
    else:
        ref.richardson_lucy_update_(correction, estimate, factor)
    return correction


if _extension.LOADED and hasattr(torch.ops.deblur_ops, "richardson_lucy_ratio_"):

    @torch.library.register_fake("deblur_ops::richardson_lucy_ratio_")
    def _ratio_fake(blurred, observed, background, floor):
        torch._check(observed.shape == blurred.shape, lambda: "observed must have the shape of blurred")
        torch._check(background is None or background.shape == blurred.shape,
                     lambda: "background must have the shape of blurred")

    @torch.library.register_fake("deblur_ops::richardson_lucy_update_")
    def _update_fake(correction, estimate, factor):
        torch._check(estimate.shape == correction.shape, lambda: "estimate must have the shape of correction")
        torch._check(factor is None or (factor.dim() == correction.dim() and factor.shape[1] == 1),
                     lambda: "factor must have shape (P, 1, *S)")
