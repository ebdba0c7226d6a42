"""Public wrappers of the custom ops: validation, fake kernels, autograd, reference fallback."""
from .learnable_shrink import LearnableShrink, learnable_shrink
from .wiener_stack import wiener_stack

__all__ = ["LearnableShrink", "learnable_shrink", "wiener_stack"]
