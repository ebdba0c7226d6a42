"""Built-in sample images: the offline images that ship with scikit-image (no download)."""
from __future__ import annotations

import numpy as np

# Images of skimage.data that are bundled with the package (the others need a download).
SAMPLES = ("camera", "astronaut", "moon", "hubble_deep_field", "coins", "text", "cell",
           "immunohistochemistry", "retina", "chelsea", "coffee", "rocket", "brick", "grass",
           "gravel", "page", "horse", "clock", "microaneurysms", "shepp_logan_phantom")


def sample_image(name: str = "camera", *, size: int | None = None) -> np.ndarray:
    """A bundled scikit-image picture as float32 in [0, 1]: (H, W) grey or (H, W, 3) RGB.

    Args:
        name: one of :data:`SAMPLES`.
        size: if given, the central ``size`` x ``size`` crop (or the whole image if smaller).
    """
    if name not in SAMPLES:
        raise ValueError(f"unknown sample image {name!r}; choose one of {list(SAMPLES)}")
    from skimage import data, util

    image = util.img_as_float32(getattr(data, name)())
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if size is not None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        h, w = image.shape[:2]
        top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
        image = image[top:top + size, left:left + size]
    return np.ascontiguousarray(image, dtype=np.float32)


def to_batch(image: np.ndarray):
    """(H, W) or (H, W, 3) NumPy image -> (1, C, H, W) float32 tensor."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    return (t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]).contiguous()


def from_batch(t) -> np.ndarray:
    """(1, C, H, W) tensor -> (H, W) or (H, W, C) NumPy image."""
    x = t.detach().cpu()[0]
    return (x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)).numpy()
