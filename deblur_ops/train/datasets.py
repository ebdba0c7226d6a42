"""Synthetic training pairs made on the fly: sharp crops of real images, blurred and noised.

Every learned model trains on the same generator. Images are the offline scikit-image pictures
that are *not* used by the evaluation protocol (:mod:`deblur_ops.apps.evaluate`), or any folder of
images the user gives. Blur kinds:

- ``"uniform"``: one PSF per sample, a mix of linear motion, camera-shake trajectories
  (Boracchi & Foi) and Gaussians;
- ``"linear"``: uniform linear motion with the (length, angle) of the motion-bank grid (paper 004
  §2.2, the 511 grid motions), so each sample also names its bank filter;
- ``"field"``: smooth non-uniform linear motion from a random camera translation and roll
  (paper 004 Table 3), as per-pixel length and angle maps; blurred by default with each pixel's
  own line (:func:`~deblur_ops.psf.exact_motion_blur`), not through the 511-filter bank that the
  solvers use, so that a model trained on it does not learn the bank's interpolation error (the
  "inverse crime"); ``forward="bank"`` gives the old, bank-made fields;
- ``"shake"``: spatially varying camera shake, blurred by the exact trajectory model
  (:func:`~deblur_ops.psf.exact_trajectory_blur`): one Boracchi & Foi trajectory per sample, which
  every pixel follows scaled and rotated by smooth per-pixel maps (the scale grows linearly along
  one random direction, the rotation along another, as a tilted scene and a camera roll make the
  shake vary across the frame). There is no line per pixel, so the solvers' motion-field models
  never match it exactly.

Each sample is blurred on a crop larger than the patch and then cropped, so the blur near the patch
border comes from real scene content (no padding artefacts), then gets Poisson noise (optional)
and Gaussian noise of a random sigma. A seed fixes the whole sequence.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import psf as psf_lib
from ..data import SAMPLES
from ..data.degrade import blur as blur_uniform
from ..ops.nu_conv import nu_conv
from ..psf.analytic import camera_shake_psfs, camera_shake_trajectory, gaussian_psf

# The evaluation protocol's images never enter training or validation.
EVALUATION_IMAGES = ("camera", "astronaut", "coins", "chelsea", "rocket")
VALIDATION_IMAGES = ("coffee", "immunohistochemistry")
TRAIN_IMAGES = tuple(n for n in SAMPLES if n not in EVALUATION_IMAGES + VALIDATION_IMAGES)
KINDS = ("uniform", "linear", "field", "shake")
# Time samples of a "shake" trajectory: enough for a smooth path, few enough to keep the exact blur cheap.
SHAKE_TRAJECTORY_SAMPLES = 200
# Largest relative change of the shake's scale, and largest turn in degrees, from the crop's centre to its edge.
SHAKE_SCALE_GRADIENT, SHAKE_ROTATION_GRADIENT = 0.5, 30.0
FIELD_FORWARD_MODELS = ("exact", "bank")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _as_image(array: np.ndarray, channels: int, name: str) -> torch.Tensor:
    """(C, H, W) float32 in [0, 1] with ``channels`` channels (grey <-> RGB as needed)."""
    a = np.asarray(array)
    if a.dtype.kind in "ui":
        a = a.astype(np.float32) / np.iinfo(a.dtype).max
    a = a.astype(np.float32)
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim == 3 and a.shape[-1] != 3:
        raise ValueError(f"training image {name} has shape {a.shape}; expected (H, W) or (H, W, 3)")
    if a.ndim not in (2, 3):
        raise ValueError(f"training image {name} has shape {a.shape}; expected (H, W) or (H, W, 3)")
    if a.ndim == 3 and channels == 1:
        a = a @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(a))
    if t.dim() == 2:
        t = t[None].expand(channels, -1, -1)
    else:
        t = t.permute(2, 0, 1)
    high = float(t.max())
    return (t / high if high > 1 else t).contiguous()


def load_images(images=None, *, split: str = "train", channels: int = 1) -> list[torch.Tensor]:
    """The training (or validation) pictures as (C, H, W) float32 tensors.

    Args:
        images: None for the built-in split, a list of sample names, or a folder of image files
            (PNG, JPEG, TIFF, BMP; searched recursively; sorted, every 10th file is validation).
        split: ``"train"`` or ``"val"``.
        channels: 1 (grey) or 3 (RGB).

    Raises:
        ValueError: unknown names, an empty folder, a bad split or channel count.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    from ..data import sample_image

    if images is None:
        names = TRAIN_IMAGES if split == "train" else VALIDATION_IMAGES
        return [_as_image(sample_image(n), channels, n) for n in names]
    if isinstance(images, (str, Path)):
        folder = Path(images)
        if not folder.is_dir():
            raise ValueError(f"images must be a folder of pictures, {folder} is not a directory")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 2:
            raise ValueError(f"{folder} holds {len(files)} image file(s) ({', '.join(IMAGE_SUFFIXES)}); "
                             f"give at least 2 (every 10th one is kept for validation)")
        chosen = [f for i, f in enumerate(files) if (i % 10 == 9) == (split == "val")] or files[-1:]
        import imageio.v3 as iio

        return [_as_image(iio.imread(f), channels, str(f)) for f in chosen]
    names = list(images)
    unknown = [n for n in names if n not in SAMPLES]
    if unknown:
        raise ValueError(f"unknown sample image(s) {unknown}; choose from {list(SAMPLES)} or give a folder")
    return [_as_image(sample_image(n), channels, n) for n in names]


def _fit(psf: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop or zero-pad an odd (k, k) PSF to (size, size) and renormalise."""
    k = psf.shape[-1]
    if k > size:
        o = (k - size) // 2
        psf = psf[o:o + size, o:o + size]
    elif k < size:
        o = (size - k) // 2
        psf = torch.nn.functional.pad(psf, (o, o, o, o))
    return psf / psf.sum()


class SyntheticBlur:
    """Deterministic stream of (sharp, blurry) training batches.

    Args:
        psf: blur kind, one of ``"uniform"``, ``"linear"``, ``"field"``, ``"shake"`` (see the module doc).
        patch: side of the square patches.
        psf_size: odd side of the returned PSFs (uniform kinds); >= ``max_length``.
        channels: 1 (grey) or 3 (RGB).
        noise: (low, high) range of the Gaussian noise sigma on [0, 1] images.
        poisson: None, or a (low, high) range of peak photon counts for Poisson noise before the
            Gaussian noise.
        images: None (built-in split), sample names, or a folder (see :func:`load_images`).
        max_length: longest motion in pixels (``"shake"``: the largest span of a pixel's PSF, twice
            its farthest reach from its centre).
        seed: fixes the whole sequence.
        split: ``"train"`` or ``"val"`` (disjoint images).
        forward: how ``"field"`` samples are blurred: ``"exact"`` (each pixel's own line) or
            ``"bank"`` (the bilinear blend of bank lines, paper 004 eq. 17: the solvers' model);
            ``"shake"`` has ``"exact"`` only.

    Example:
        >>> data = SyntheticBlur(patch=32, psf_size=15, max_length=9, seed=0)
        >>> b = data.batch(2)
        >>> b["blurry"].shape, b["psf"].shape, b["sigma"].shape
        (torch.Size([2, 1, 32, 32]), torch.Size([2, 15, 15]), torch.Size([2]))
    """

    def __init__(self, psf: str = "uniform", *, patch: int = 64, psf_size: int = 21, channels: int = 1,
                 noise=(0.003, 0.015), poisson=None, images=None, max_length: float = 21,
                 seed: int = 0, split: str = "train", forward: str = "exact"):
        if psf not in KINDS:
            raise ValueError(f"psf must be one of {KINDS}, got {psf!r}")
        if forward not in FIELD_FORWARD_MODELS:
            raise ValueError(f"forward must be one of {FIELD_FORWARD_MODELS}, got {forward!r}")
        if psf == "shake" and forward != "exact":
            raise ValueError(f"psf='shake' has only the exact trajectory model, got forward={forward!r}; "
                             f"leave forward='exact' (forward='bank' is for psf='field')")
        if int(patch) != patch or patch < 8:
            raise ValueError(f"patch must be an integer >= 8, got {patch!r}")
        if int(psf_size) != psf_size or psf_size < 3 or psf_size % 2 == 0:
            raise ValueError(f"psf_size must be an odd integer >= 3, got {psf_size!r}")
        if not (1 <= max_length <= psf_size):
            raise ValueError(f"max_length must be in [1, psf_size={psf_size}], got {max_length!r}; "
                             f"raise psf_size for longer motions")
        lo, hi = (float(n) for n in noise)
        if not (0 <= lo <= hi):
            raise ValueError(f"noise must be a (low, high) range of sigmas >= 0, got {noise!r}")
        if poisson is not None:
            plo, phi = (float(n) for n in poisson)
            if not (0 < plo <= phi):
                raise ValueError(f"poisson must be None or a (low, high) range of peak counts > 0, got {poisson!r}")
            poisson = (plo, phi)
        self.kind, self.patch, self.psf_size, self.channels = psf, int(patch), int(psf_size), int(channels)
        self.noise, self.poisson, self.max_length = (lo, hi), poisson, float(max_length)
        self.forward = forward
        self.images = load_images(images, split=split, channels=channels)
        self.margin = self.psf_size // 2 + 1
        need = self.patch + 2 * self.margin
        # Images too small for a patch plus its blur margin are left out (e.g. a 102 px picture).
        sizes = [tuple(im.shape[-2:]) for im in self.images]
        self.images = [im for im in self.images if min(im.shape[-2:]) >= need]
        if not self.images:
            raise ValueError(f"patch {patch} with psf_size {psf_size} needs images of at least {need} px, "
                             f"got {sizes}; use smaller patches")
        self.seed = int(seed) + (0 if split == "train" else 10_000_019)
        self.generator = torch.Generator().manual_seed(self.seed)
        bank_lengths = [n for n in range(1, 36, 2) if n <= self.max_length]
        self.bank, self.grid = psf_lib.motion_bank(bank_lengths, range(0, 180, 6), self.psf_size)

    @classmethod
    def splits(cls, psf: str = "uniform", *, seed: int = 0, **options) -> tuple["SyntheticBlur", "SyntheticBlur"]:
        """The training and the validation stream of one configuration (disjoint images, one seed).

        Example:
            >>> train, val = SyntheticBlur.splits(patch=32, psf_size=15, max_length=9, seed=0)
            >>> len(train.images), len(val.images)  # the built-in training and validation pictures
            (13, 2)
        """
        return (cls(psf, seed=seed, split="train", **options), cls(psf, seed=seed, split="val", **options))

    # -- state, so that a resumed training continues the same sequence
    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def _uniform(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.generator, dtype=torch.float64)

    def _crop(self, size: int) -> torch.Tensor:
        g = self.generator
        image = self.images[int(torch.randint(len(self.images), (1,), generator=g))]
        h, w = image.shape[-2:]
        top = int(torch.randint(h - size + 1, (1,), generator=g))
        left = int(torch.randint(w - size + 1, (1,), generator=g))
        crop = image[:, top:top + size, left:left + size]
        k = int(torch.randint(4, (1,), generator=g))
        if bool(torch.randint(2, (1,), generator=g)):
            crop = crop.flip(-1)
        return torch.rot90(crop, k, (-2, -1)).contiguous()

    def _random_psf(self) -> torch.Tensor:
        u = self._uniform(4)
        choice = float(u[0])
        length = 1 + float(u[1]) * (self.max_length - 1)
        if choice < 0.5:
            psf = psf_lib.linear_motion_kernel(length, float(u[2]) * 180, self.psf_size)
        elif choice < 0.8:
            seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator))
            trajectory = camera_shake_trajectory(400, max(length, 2.0), seed=seed)
            psf = camera_shake_psfs(trajectory, None, (1.0,))[0]
        else:
            psf = gaussian_psf(0.5 + 2.5 * float(u[3]))
        return _fit(psf.float(), self.psf_size)

    def _shake(self, big: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``big`` blurred by a random spatially varying camera shake (the exact trajectory model), with
        the (N, 2) trajectory and the (S, S) scale and rotation maps that made it."""
        u = self._uniform(4)
        span = 1 + float(u[0]) * (self.max_length - 1)
        seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator))
        trajectory = camera_shake_trajectory(SHAKE_TRAJECTORY_SAMPLES, max(span, 2.0), seed=seed)
        scale, rotation = psf_lib.shake_maps(big.shape[-2:], 360 * float(u[1]),
                                             SHAKE_SCALE_GRADIENT * (2 * float(u[2]) - 1),
                                             SHAKE_ROTATION_GRADIENT * (2 * float(u[3]) - 1))
        # The largest PSF (scale 1 after this) spans `span` pixels, so its support fits the crop's margin.
        scale = scale / float(scale.max())
        reach = float(psf_lib.trajectory_samples(trajectory).norm(dim=1).max())
        trajectory = trajectory * (span / (2 * max(reach, 1e-6)))
        out = psf_lib.exact_trajectory_blur(big, trajectory, scale, rotation, padding="zeros")
        return out, trajectory, scale, rotation

    def batch(self, size: int) -> dict:
        """``size`` fresh samples.

        Returns:
            dict with ``"sharp"`` and ``"blurry"`` (B, C, P, P) float32, ``"sigma"`` (B,) the
            Gaussian noise sigma, and by kind: ``"psf"`` (B, k, k) for ``uniform``/``linear``;
            ``"bank_index"`` (B,) into :attr:`bank` and ``"length"``/``"angle"`` (B, P, P) for
            ``linear`` and ``field``; for ``shake``, ``"trajectory"`` (B, N, 2) float64 and
            ``"scale"``/``"rotation"`` (B, P, P), so that, away from the patch border by more than the
            blur's reach, the noise-free ``blurry`` is ``exact_trajectory_blur(sharp, trajectory, scale,
            rotation)``.
        """
        if int(size) != size or size < 1:
            raise ValueError(f"batch size must be a positive integer, got {size!r}")
        m, p = self.margin, self.patch
        sharp, blurry, psfs, index, lengths, angles = [], [], [], [], [], []
        trajectories, scales, rotations = [], [], []
        for _ in range(int(size)):
            big = self._crop(p + 2 * m)[None]
            if self.kind == "shake":
                out, trajectory, scale, rotation = self._shake(big)
                trajectories.append(trajectory)
                scales.append(scale[m:m + p, m:m + p].float())
                rotations.append(rotation[m:m + p, m:m + p].float())
            elif self.kind == "field":
                u = self._uniform(5)
                shift = (float(u[0]) * 2 - 1, float(u[1]) * 2 - 1)
                roll = (float(u[2]) * 2 - 1) * 3.0
                centre = ((float(u[3]) - 0.5) * 4 * p + p / 2 + m, (float(u[4]) - 0.5) * 4 * p + p / 2 + m)
                field = psf_lib.MotionField.from_camera_motion(big.shape[-2:], shift, roll, centre)
                # The displacement is linear in (shift, roll): scale both so the longest motion
                # is a random fraction of max_length.
                target = 1 + float(self._uniform(1)) * (self.max_length - 1)
                scale = target / max(float(field.length.max()), 1e-6)
                field = psf_lib.MotionField.from_camera_motion(
                    big.shape[-2:], (shift[0] * scale, shift[1] * scale), roll * scale, centre)
                if self.forward == "exact":
                    out = psf_lib.exact_motion_blur(big, field.length, field.angle, padding="zeros")
                else:
                    idx, weights = psf_lib.motion_weights(field.length.float(), field.angle.float(), self.grid)
                    out = nu_conv(big, self.bank.float(), idx, weights, mode="scatter", padding="zeros")
                lengths.append(field.length[m:m + p, m:m + p].float())
                angles.append(field.angle[m:m + p, m:m + p].float())
            else:
                if self.kind == "linear":
                    i = int(torch.randint(len(self.grid), (1,), generator=self.generator))
                    psf = self.bank[i].float()
                    index.append(i)
                    lengths.append(torch.full((p, p), float(self.grid[i, 0])))
                    angles.append(torch.full((p, p), float(self.grid[i, 1])))
                else:
                    psf = self._random_psf()
                psfs.append(psf)
                out = blur_uniform(big, psf, padding="reflect")
            sharp.append(big[0, :, m:m + p, m:m + p])
            blurry.append(out[0, :, m:m + p, m:m + p])
        sharp, clean = torch.stack(sharp), torch.stack(blurry)
        n = clean.shape[0]
        observed = clean
        if self.poisson is not None:
            lo, hi = self.poisson
            peak = (lo + (hi - lo) * self._uniform(n)).float().reshape(n, 1, 1, 1)
            observed = torch.poisson(clean.clamp(min=0) * peak, generator=self.generator) / peak
        lo, hi = self.noise
        sigma = (lo + (hi - lo) * self._uniform(n)).float()
        noise = torch.randn(observed.shape, generator=self.generator)
        out = {"sharp": sharp, "blurry": (observed + sigma.reshape(n, 1, 1, 1) * noise).contiguous(),
               "sigma": sigma}
        if psfs:
            out["psf"] = torch.stack(psfs)
        if index:
            out["bank_index"] = torch.tensor(index)
        if lengths:
            out["length"], out["angle"] = torch.stack(lengths), torch.stack(angles)
        if trajectories:
            out["trajectory"], out["scale"] = torch.stack(trajectories), torch.stack(scales)
            out["rotation"] = torch.stack(rotations)
        return out


class Mixed:
    """Batches drawn in turn from several streams (e.g. uniform ``"linear"`` and ``"field"`` blur),
    so that one model trains on both; resumable like each stream.

    Example:
        >>> a = SyntheticBlur("linear", patch=16, psf_size=9, max_length=5, seed=0)
        >>> b = SyntheticBlur("field", patch=16, psf_size=9, max_length=5, seed=0)
        >>> mixed = Mixed([a, b])
        >>> [tuple(mixed.batch(2)["blurry"].shape) for _ in range(2)]
        [(2, 1, 16, 16), (2, 1, 16, 16)]
    """

    def __init__(self, streams):
        self.streams = list(streams)
        if not self.streams or not all(hasattr(t, "batch") for t in self.streams):
            raise ValueError("Mixed needs at least one stream with a batch(n) method")
        self.turn = 0

    def batch(self, size: int) -> dict:
        stream = self.streams[self.turn % len(self.streams)]
        self.turn += 1
        return stream.batch(size)

    def state_dict(self) -> dict:
        return {"turn": self.turn, "streams": [t.state_dict() for t in self.streams]}

    def load_state_dict(self, state: dict) -> None:
        self.turn = int(state["turn"])
        for stream, sub in zip(self.streams, state["streams"]):
            stream.load_state_dict(sub)


class PooledBlur:
    """A fixed pool of noise-free (sharp, blurry) pairs drawn once from a :class:`SyntheticBlur`
    stream, served in random order with a fresh flip / quarter turn and fresh Gaussian noise per draw.

    For blur that is slow to make (``"shake"``, the exact trajectory model: about 0.18 s per 64 px
    patch, more than 10x the cost of a training step of the autoencoder) the pool is made once and reused, so a
    long training costs its steps, not its blur. A turned or flipped pair is still an exact pair (of
    the turned blur). Resumable: the pool is remade from its seed.

    Args:
        stream: a :class:`SyntheticBlur` made with ``noise=(0, 0)`` (its pairs must be noise-free).
        size: pairs in the pool (>= 1).
        noise: (low, high) range of the Gaussian noise sigma added to each draw.
        seed: fixes the draw order, the turns and the noise.
        progress: optional ``progress(done, total)`` while the pool is made.

    Example:
        >>> stream = SyntheticBlur("uniform", patch=16, psf_size=9, max_length=5, noise=(0, 0), seed=0)
        >>> pool = PooledBlur(stream, 8, noise=(0.01, 0.01), seed=0)
        >>> b = pool.batch(3)
        >>> tuple(b["blurry"].shape), tuple(b["sigma"].shape)
        ((3, 1, 16, 16), (3,))
    """

    def __init__(self, stream: "SyntheticBlur", size: int, *, noise=(0.003, 0.015), seed: int = 0, progress=None):
        if isinstance(size, bool) or int(size) != size or size < 1:
            raise ValueError(f"pool size must be a positive integer, got {size!r}")
        if stream.noise != (0.0, 0.0) or stream.poisson is not None:
            raise ValueError(f"the pool's stream must be noise-free (noise=(0, 0), poisson=None), got noise="
                             f"{stream.noise}, poisson={stream.poisson}: the pool adds fresh noise to each draw")
        lo, hi = (float(n) for n in noise)
        if not (0 <= lo <= hi):
            raise ValueError(f"noise must be a (low, high) range of sigmas >= 0, got {noise!r}")
        self.noise = (lo, hi)
        sharp, blurry = [], []
        chunk = 16
        for start in range(0, int(size), chunk):
            b = stream.batch(min(chunk, int(size) - start))
            sharp.append(b["sharp"])
            blurry.append(b["blurry"])
            if progress is not None:
                progress(start + b["sharp"].shape[0], int(size))
        self.sharp, self.blurry = torch.cat(sharp), torch.cat(blurry)
        self.generator = torch.Generator().manual_seed(int(seed) + 20_000_003)

    def __len__(self) -> int:
        return self.sharp.shape[0]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def batch(self, size: int) -> dict:
        """``size`` draws: ``"sharp"``, ``"blurry"`` (B, C, P, P) and ``"sigma"`` (B,), as :meth:`SyntheticBlur.batch`."""
        if int(size) != size or size < 1:
            raise ValueError(f"batch size must be a positive integer, got {size!r}")
        g = self.generator
        index = torch.randint(len(self), (int(size),), generator=g)
        turns = torch.randint(4, (int(size),), generator=g)
        flips = torch.randint(2, (int(size),), generator=g)
        sharp, blurry = [], []
        for i, k, f in zip(index.tolist(), turns.tolist(), flips.tolist()):
            pair = torch.stack([self.sharp[i], self.blurry[i]])
            if f:
                pair = pair.flip(-1)
            pair = torch.rot90(pair, k, (-2, -1))
            sharp.append(pair[0])
            blurry.append(pair[1])
        sharp, blurry = torch.stack(sharp).contiguous(), torch.stack(blurry)
        lo, hi = self.noise
        sigma = (lo + (hi - lo) * torch.rand(int(size), generator=g, dtype=torch.float64)).float()
        noise = torch.randn(blurry.shape, generator=g)
        return {"sharp": sharp, "blurry": (blurry + sigma.reshape(-1, 1, 1, 1) * noise).contiguous(), "sigma": sigma}


def to_device(batch: dict, device) -> dict:
    """Every tensor of ``batch`` moved to ``device``."""
    return {k: (t.to(device) if isinstance(t, torch.Tensor) else t) for k, t in batch.items()}


def psnr_batch(estimate: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, data range 1) of each item of a (B, C, H, W) batch, estimates clipped to [0, 1]."""
    mse = ((estimate.clamp(0, 1) - sharp) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp(min=1e-12))


__all__ = ["SyntheticBlur", "Mixed", "PooledBlur", "load_images", "to_device", "psnr_batch", "TRAIN_IMAGES", "VALIDATION_IMAGES",
           "EVALUATION_IMAGES", "KINDS", "FIELD_FORWARD_MODELS"]
