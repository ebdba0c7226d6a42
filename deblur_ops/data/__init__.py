"""Images and synthetic data: sample pictures, sample scenes, degradation, noise estimation, metrics."""
from .images import SAMPLES, from_batch, sample_image, to_batch

__all__ = ["SAMPLES", "from_batch", "sample_image", "to_batch"]
