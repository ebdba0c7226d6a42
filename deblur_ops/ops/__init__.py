"""Public wrappers of the custom ops: validation, fake kernels, autograd, reference fallback."""
from .learnable_shrink import LearnableShrink, learnable_shrink
from .wiener_stack import wiener_stack
from .nu_conv import nu_conv

__all__ = ["LearnableShrink", "learnable_shrink", "nu_conv", "wiener_stack"]
