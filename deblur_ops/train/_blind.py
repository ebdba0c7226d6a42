"""What the blind recipes of papers 002 and 003 share: their data, validation size and ``--set`` lists."""
from __future__ import annotations

import math

from .datasets import PooledBlur, SyntheticBlur

# Patches in the fixed validation set of the blind recipes (drawn once from the validation images).
VALIDATION_PATCHES = 64


BLIND_DATA = {"uniform": "uniform (linear motion, camera shake, Gaussian)",
              "shake": "spatially varying camera shake (exact trajectory model)"}


def blind_data(options, patch: int, cfg: dict):
    """Training and validation streams of the blind recipes, and their description for the weight info.

    ``cfg["data"]`` (``--set data=...``) picks the blur: ``"uniform"`` (default,
    :class:`~.datasets.SyntheticBlur` ``psf="uniform"``: linear motion, camera shake, Gaussians) or
    ``"shake"`` (spatially varying camera shake made by the exact trajectory model), up to
    ``cfg["max_length"]`` pixels, Gaussian noise sigma in [``noise_low``, ``noise_high``], grey patches.
    ``cfg["pool"]`` (``--set pool=N``, default 0: every pair made fresh) makes N training pairs once
    and serves them turned, flipped and with fresh noise (:class:`~.datasets.PooledBlur`): the
    affordable way to train long on ``data=shake``, whose pairs are slow to make.
    """
    data = cfg.get("data", "uniform")
    if data not in BLIND_DATA:
        raise ValueError(f"data must be one of {tuple(BLIND_DATA)} (--set data=uniform or shake), got {data!r}")
    longest = math.ceil(cfg["max_length"])
    psf_size = longest + 1 - longest % 2  # the smallest odd size that holds the longest motion
    common = dict(patch=patch, psf_size=psf_size, max_length=cfg["max_length"],
                  noise=(cfg["noise_low"], cfg["noise_high"]), images=options.images)
    pool = int(cfg.get("pool", 0))
    if pool < 0:
        raise ValueError(f"pool must be 0 (pairs made fresh) or the number of pairs made once, got {pool}")
    if pool:
        stream = SyntheticBlur(data, seed=options.seed, split="train", **{**common, "noise": (0.0, 0.0)})
        from tqdm import tqdm

        with tqdm(total=pool, desc="shake pool", unit="pair", disable=not getattr(options, "progress", False)) as bar:
            train = PooledBlur(stream, pool, noise=common["noise"], seed=options.seed,
                               progress=lambda done, _total: bar.update(done - bar.n))
        val = SyntheticBlur(data, seed=options.seed, split="val", **common)
    else:
        train, val = SyntheticBlur.splits(data, seed=options.seed, **common)
    described = {"kind": BLIND_DATA[data], "patch": patch,
                 "max_length": cfg["max_length"], "noise_sigma": [cfg["noise_low"], cfg["noise_high"]],
                 "pool": pool or None, "channels": 1, "images": options.images or "built-in offline skimage images (training split)"}
    return train, val, described


def validation_batches(batch_size: int) -> int:
    """Number of batches of ``batch_size`` that make up about :data:`VALIDATION_PATCHES` patches."""
    return max(1, round(VALIDATION_PATCHES / batch_size))


def int_tuple(value, name: str) -> tuple:
    """A ``--set`` list of integers given as "32,64,128", [32, 64, 128] or 32, as a tuple.

    Example:
        >>> int_tuple("32,64", "filters"), int_tuple([1, 1], "head")
        ((32, 64), (1, 1))
    """
    items = value if isinstance(value, (list, tuple)) else str(value).strip("[]() ").split(",")
    try:
        return tuple(int(i) for i in items)
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers like 32,64,128, got {value!r}") from None
