"""Quality harness: blur clean images with known PSFs plus noise, restore, score PSNR/SSIM/runtime.

Every method of :func:`deblur_ops.methods` runs through :func:`deblur_ops.deblur`; scikit-image's
own ``restoration.wiener`` and ``restoration.richardson_lucy`` run as peers. The default protocol
follows paper 004 Table 1: eight linear-motion kernels, several images, white Gaussian noise of
sigma = 1 % of the [0, 1] range. The blurred images are made without any boundary assumption: a
crop larger than the test image by the PSF radius is blurred and only its interior is kept, so no
method is favoured by knowing what lies outside the image.

A second protocol, modelled on paper 004 Table 3, uses spatially varying blur: kernel specs
``field:SEED`` are smooth motion fields of a camera that translates and rolls during the exposure
(:meth:`deblur_ops.psf.MotionField.from_camera_motion`), scored for the methods that accept
spatially varying PSFs (``nu_cg``, ``irc``).

Kernel specs ``shakefield:SEED`` are spatially varying camera shake, made by the exact trajectory
model (:func:`deblur_ops.psf.exact_trajectory_blur`): one Boracchi-Foi trajectory that every pixel
follows, scaled and rotated by smooth ramps (:func:`deblur_ops.psf.shake_maps`). No line field
describes it and there is no clean best-line approximation of a curved path, so every method that
takes a PSF is given the same uniform PSF: the shake at the image centre (where the maps are the
trajectory itself, scale 1, no rotation). The scores then say what ignoring the variation costs.
"""
from __future__ import annotations

import datetime
import json
import math
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .. import psf as psf_lib
from ..api import deblur, methods
from ..restore import METHODS
from ..data import SAMPLES, sample_image, to_batch
from ..data.degrade import add_gaussian_noise, blur
from ..validation import MIN_IMAGE_SIDE, integer_at_least

# Paper 004 Table 1 uses 8 blur kernels; ours are linear motions spanning lengths 9-27 px and angles.
DEFAULT_KERNELS = ("motion:9:0", "motion:13:45", "motion:17:90", "motion:21:135",
                   "motion:15:30", "motion:25:60", "motion:19:120", "motion:27:160")
DEFAULT_IMAGES = ("camera", "astronaut", "coins", "chelsea", "rocket")
DEFAULT_NOISE = (0.01,)
PEERS = ("skimage_wiener", "skimage_richardson_lucy")
# Shared by richardson_lucy and its skimage peer so that both run the same algorithm length.
RL_ITERATIONS = 30
# Besides the defaults, Richardson-Lucy in skimage's own set-up (zero boundary, flat start at 0.5)
# against skimage given the observation clipped at 0 as ours clips it: the same algorithm on the
# same data, so the two can be compared number for number.
DEFAULT_METHODS = ("wiener", "admm_tv", "richardson_lucy", "richardson_lucy:padding=zeros,init=0.5",
                   "skimage_wiener", "skimage_richardson_lucy", "skimage_richardson_lucy:nonnegative=true")


# Paper 004 Table 3 protocol: random camera motion (translation up to FIELD_MAX_SHIFT px along each
# axis, roll up to FIELD_MAX_ROLL degrees), giving lines of about 1-17 px at 128x128.
NONUNIFORM_KERNELS = ("field:1", "field:2", "field:3", "field:4")
NONUNIFORM_IMAGES = ("camera", "astronaut", "coins")
NONUNIFORM_METHODS = ("nu_cg", "irc")
NONUNIFORM_SIZE = 128
FIELD_MAX_SHIFT = 8.0
FIELD_MAX_ROLL = 10.0
# How motion-field observations are made: "exact" blurs every pixel with its own line
# (psf.exact_motion_blur), "bank" through the 511-filter bank the solvers use (MotionField.blur);
# only "exact" is free of the inverse crime of making data with the solver's own model.
FIELD_FORWARD_MODELS = ("exact", "bank")
# The bank the solvers' MotionField blurs through: paper 004's 511 filters, or 1 px / 2 degree steps
# (psf.MotionField, bank="fine"), whose own model error lies well below the noise.
FIELD_BANKS = psf_lib.MotionField.BANKS
# shakefield:SEED: a Boracchi-Foi trajectory of this path length (px) and number of time samples, its
# scale changing by up to this fraction and its rotation by up to this many degrees from the centre to the edge.
SHAKEFIELD_LENGTH = 20.0
SHAKEFIELD_SAMPLES = 200
SHAKEFIELD_MAX_SCALE_CHANGE = 0.3
SHAKEFIELD_MAX_ROTATION_CHANGE = 20.0


def is_field(spec: str) -> bool:
    """Whether a kernel spec describes a spatially varying motion field (``field:SEED``)."""
    return str(spec).startswith("field:")


def make_field(spec: str, shape) -> psf_lib.MotionField:
    """The random camera-motion field ``field:SEED`` on an image of ``shape`` (H, W).

    Example:
        >>> make_field("field:1", (64, 64)).shape
        (64, 64)
    """
    name, _, seed = str(spec).partition(":")
    if name != "field" or not seed.isdigit():
        raise ValueError(f"a motion-field spec looks like field:SEED (SEED a non-negative integer), got {spec!r}")
    gen = torch.Generator().manual_seed(int(seed))
    shift = ((torch.rand(2, generator=gen, dtype=torch.float64) * 2 - 1) * FIELD_MAX_SHIFT).tolist()
    roll = float((torch.rand(1, generator=gen, dtype=torch.float64) * 2 - 1) * FIELD_MAX_ROLL)
    return psf_lib.MotionField.from_camera_motion(shape, shift, roll)


def is_shake_field(spec: str) -> bool:
    """Whether a kernel spec describes spatially varying camera shake (``shakefield:SEED``)."""
    return str(spec).startswith("shakefield:")


def make_shake_field(spec: str, shape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The trajectory, scale and rotation maps of ``shakefield:SEED`` on an image of ``shape`` (H, W),
    for :func:`deblur_ops.psf.exact_trajectory_blur`.

    Example:
        >>> trajectory, scale, rotation = make_shake_field("shakefield:1", (64, 64))
        >>> tuple(trajectory.shape), tuple(scale.shape), tuple(rotation.shape)
        ((200, 2), (64, 64), (64, 64))
    """
    name, _, seed = str(spec).partition(":")
    if name != "shakefield" or not seed.isdigit():
        raise ValueError(f"a camera-shake field spec looks like shakefield:SEED (SEED a non-negative integer), "
                         f"got {spec!r}")
    gen = torch.Generator().manual_seed(int(seed))
    u = torch.rand(3, generator=gen, dtype=torch.float64).tolist()
    trajectory = psf_lib.camera_shake_trajectory(SHAKEFIELD_SAMPLES, SHAKEFIELD_LENGTH, seed=int(seed))
    scale, rotation = psf_lib.shake_maps(shape, 360 * u[0], SHAKEFIELD_MAX_SCALE_CHANGE * (2 * u[1] - 1),
                                         SHAKEFIELD_MAX_ROTATION_CHANGE * (2 * u[2] - 1))
    return trajectory, scale, rotation


def _shake_reach(trajectory: torch.Tensor) -> int:
    """A margin that holds every pixel's shake PSF of a ``shakefield`` (the largest scale of
    :func:`psf.shake_maps` is 1 + sqrt(2) |change|; the 0.1 px covers the time sampling, the 1 px the tent)."""
    largest = 1 + math.sqrt(2) * SHAKEFIELD_MAX_SCALE_CHANGE
    return math.ceil(largest * (float(psf_lib.trajectory_samples(trajectory).norm(dim=1).max()) + 0.1)) + 1


def shake_field_centre_psf(spec: str) -> torch.Tensor:
    """The uniform PSF that methods get for ``shakefield:SEED``: the exact model's PSF at the image
    centre (the trajectory unscaled and unrotated), float32, odd side.

    Example:
        >>> k = shake_field_centre_psf("shakefield:1")
        >>> k.shape[0] % 2, round(float(k.sum()), 5)
        (1, 1.0)
    """
    trajectory = make_shake_field(spec, (1, 1))[0]
    r = _shake_reach(trajectory)
    delta = torch.zeros(2 * r + 1, 2 * r + 1, dtype=torch.float64)
    delta[r, r] = 1.0
    return psf_lib.exact_trajectory_blur(delta, trajectory, padding="zeros").float()


def degrade_shake_field(image_name: str, spec: str, noise: float, size: int, seed: int):
    """Like :func:`degrade` for ``shakefield:SEED``: the maps are drawn on the larger crop, which is
    blurred by :func:`deblur_ops.psf.exact_trajectory_blur` (scatter model) and cut to its interior;
    returns clean and observed (NumPy float32)."""
    margin = _shake_reach(make_shake_field(spec, (1, 1))[0])
    full = size + 2 * margin
    big = to_batch(_grey(sample_image(image_name, size=full)))
    if min(big.shape[-2:]) < full:
        raise ValueError(f"image {image_name!r} is smaller than size + shake margin = {full}")
    trajectory, scale, rotation = make_shake_field(spec, (full, full))
    inner = (..., slice(margin, margin + size), slice(margin, margin + size))
    blurred = psf_lib.exact_trajectory_blur(big, trajectory, scale, rotation, padding="zeros")
    observed = add_gaussian_noise(blurred[inner], noise, seed=seed)
    return big[inner][0, 0].numpy(), observed[0, 0].numpy()


def available_methods() -> list[str]:
    """Names the harness can run: the registered methods and the scikit-image peers."""
    return sorted(methods()) + list(PEERS)


def parse_method(spec: str) -> tuple[str, dict]:
    """``"name"`` or ``"name:key=value,key=value"`` -> (name, params); values parsed as JSON if possible.

    Example:
        >>> parse_method("richardson_lucy:iterations=50,padding=zeros")
        ('richardson_lucy', {'iterations': 50, 'padding': 'zeros'})
    """
    name, _, rest = str(spec).partition(":")
    if name not in available_methods():
        raise ValueError(f"unknown method {name!r} in {spec!r}; choose from {available_methods()}")
    params = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key.isidentifier():
            raise ValueError(f"method parameters must look like name:key=value,key=value, got {spec!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return name, params


def make_kernel(spec: str) -> torch.Tensor:
    """A PSF from a short text spec.

    Specs: ``motion:LENGTH:ANGLE``, ``gaussian:SIGMA``, ``moffat:FWHM:BETA``,
    ``airy:WAVELENGTH:NA:PIXEL_SIZE``, ``shake:SEED[:LENGTH]`` (Boracchi-Foi camera shake, full
    exposure, path length in pixels, default 30).

    Example:
        >>> make_kernel("motion:9:0").shape
        torch.Size([9, 9])
    """
    name, *args = str(spec).split(":")
    makers = {
        "motion": (2, 2, lambda a: psf_lib.linear_motion_kernel(a[0], a[1])),
        "gaussian": (1, 1, lambda a: psf_lib.gaussian_psf(a[0])),
        "moffat": (2, 2, lambda a: psf_lib.moffat_psf(a[0], a[1])),
        "airy": (3, 3, lambda a: psf_lib.airy_psf(a[0], a[1], a[2])),
        "shake": (1, 2, lambda a: psf_lib.camera_shake_psfs(
            psf_lib.camera_shake_trajectory(max_length=a[1] if len(a) > 1 else 30.0, seed=int(a[0])),
            exposures=(1.0,))[0]),
    }
    if name not in makers:
        raise ValueError(f"unknown kernel kind {name!r} in {spec!r}; use one of {sorted(makers)}, "
                         f"e.g. motion:21:45 or gaussian:2")
    low, high, make = makers[name]
    try:
        values = [float(a) for a in args]
    except ValueError:
        raise ValueError(f"kernel spec {spec!r} has a non-numeric argument") from None
    if not low <= len(values) <= high:
        raise ValueError(f"kernel spec {spec!r} needs {low}..{high} numbers after {name}:")
    return make(values)


def _grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        from skimage.color import rgb2gray

        return rgb2gray(image).astype(np.float32)
    return image


def degrade(image_name: str, kernel: torch.Tensor, noise: float, size: int, seed: int):
    """Clean (size, size) grey crop and its blurred, noisy observation (NumPy float32)."""
    margin = max(kernel.shape) // 2
    big = to_batch(_grey(sample_image(image_name, size=size + 2 * margin)))
    if min(big.shape[-2:]) < size + 2 * margin:
        raise ValueError(f"image {image_name!r} is smaller than size + PSF margin = {size + 2 * margin}")
    interior = (..., slice(margin, margin + size), slice(margin, margin + size))
    observed = add_gaussian_noise(blur(big, kernel)[interior], noise, seed=seed)
    return big[interior][0, 0].numpy(), observed[0, 0].numpy()


def _field_scene(image_name: str, spec: str, size: int):
    """The larger crop of a field observation, its field, and the slices of the scored interior."""
    margin = make_field(spec, (size, size)).max_length  # the field grows outwards; this bounds it
    full = size + 2 * margin
    big = to_batch(_grey(sample_image(image_name, size=full)))
    if min(big.shape[-2:]) < full:
        raise ValueError(f"image {image_name!r} is smaller than size + field margin = {full}")
    return big, make_field(spec, (full, full)), (slice(margin, margin + size), slice(margin, margin + size))


def _field_blur(big: torch.Tensor, field, forward: str) -> torch.Tensor:
    return psf_lib.exact_motion_blur(big, field.length, field.angle) if forward == "exact" else field.blur(big)


def field_model_error(image_name: str, spec: str, size: int, bank: str = "paper") -> float:
    """PSNR (dB, data range 1) of the bank's blur (:meth:`MotionField.blur` through ``bank``, the
    solvers' model) against the exact per-pixel line blur of one ``field:SEED`` observation,
    noise-free, on the scored interior: the solvers' own model error, to compare with the noise
    (sigma 0.01 = 40 dB)."""
    big, field, inner = _field_scene(image_name, spec, size)
    field = field.with_bank(bank)
    exact, bank = _field_blur(big, field, "exact")[(...,) + inner], _field_blur(big, field, "bank")[(...,) + inner]
    return 10 * math.log10(1 / max(float(((exact - bank) ** 2).mean()), 1e-20))


def degrade_field(image_name: str, spec: str, noise: float, size: int, seed: int, forward: str = "exact",
                  bank: str = "paper"):
    """Like :func:`degrade` for a motion field: the field is drawn on the larger crop, which is
    blurred (scatter model; ``forward`` in :data:`FIELD_FORWARD_MODELS`, ``"bank"`` through the
    paper's bank) and cut to its interior; returns clean, observed and the interior field, which
    blurs through ``bank`` (:data:`FIELD_BANKS`) for the solvers."""
    if forward not in FIELD_FORWARD_MODELS:
        raise ValueError(f"forward must be one of {FIELD_FORWARD_MODELS}, got {forward!r}")
    if bank not in FIELD_BANKS:
        raise ValueError(f"bank must be one of {FIELD_BANKS}, got {bank!r}")
    big, field, inner = _field_scene(image_name, spec, size)
    blurred = _field_blur(big, field, forward)
    observed = add_gaussian_noise(blurred[(...,) + inner], noise, seed=seed)
    return (big[(...,) + inner][0, 0].numpy(), observed[0, 0].numpy(), field.crop(*inner).with_bank(bank))


def _run(method: str, observed: np.ndarray, kernel: np.ndarray, noise_estimate: float, params: dict,
         device: str):
    if method == "skimage_wiener":
        from skimage import restoration

        from ..data.noise import select_wiener_snr
        from ..restore.wiener import SNR_CANDIDATES_DB

        # The peer gets the balance our own selector picks for its (Laplacian) regulariser, so
        # the comparison is of the filters and their boundary handling, not of parameter choice.
        candidates = torch.tensor(SNR_CANDIDATES_DB)
        pick = select_wiener_snr(torch.from_numpy(observed)[None, None], torch.from_numpy(kernel), candidates,
                                 noise_estimate, regularizer="laplacian")
        return restoration.wiener(observed, kernel, params.get("balance", 10 ** (-float(candidates[pick]) / 10)))
    if method == "skimage_richardson_lucy":
        from skimage import restoration

        unknown = set(params) - {"num_iter", "nonnegative"}
        if unknown:
            raise ValueError(f"skimage_richardson_lucy takes num_iter and nonnegative, got {sorted(unknown)}")
        if params.get("nonnegative", False):
            # RL's Poisson model needs y >= 0; ours clips the noise below 0, skimage's does not
            # (its multiplicative update then turns negative and unstable in dark regions).
            observed = np.clip(observed, 0, None)
        return restoration.richardson_lucy(observed, kernel, num_iter=params.get("num_iter", RL_ITERATIONS))
    if method == "richardson_lucy":
        params = {"iterations": RL_ITERATIONS, **params}
    if not METHODS[method].needs_psf:  # blind methods see the observation only
        kernel = None
    return deblur(observed, kernel, method=method, device=device, **params)


def _scores(estimate: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    estimate = np.clip(estimate, 0, 1).astype(np.float64)
    clean = clean.astype(np.float64)
    return (float(peak_signal_noise_ratio(clean, estimate, data_range=1.0)),
            float(structural_similarity(clean, estimate, data_range=1.0)))


def evaluate(method_specs: Sequence[str] = DEFAULT_METHODS, kernels: Sequence[str] = DEFAULT_KERNELS,
             images: Sequence[str] = DEFAULT_IMAGES, noise: Sequence[float] = DEFAULT_NOISE, *,
             size: int = 256, seed: int = 0, repeats: int = 3, device: str = "cpu", progress=None,
             forward: str = "exact", field_bank: str = "paper") -> dict:
    """Score restoration methods on synthetically blurred images.

    Outputs are clipped to [0, 1] before scoring; PSNR and SSIM are scikit-image's with
    ``data_range=1``; runtime is the fastest of ``repeats`` wall-clock timings of the whole call
    (after one untimed warm-up call per method; the minimum is the timing least disturbed by other
    work on the machine). The noise level is never given to methods: those that need it estimate it
    from the observation.

    Args:
        method_specs: names from :func:`available_methods`, optionally with parameters as in
            :func:`parse_method` (``"admm_tv:iterations=100"``).
        kernels: kernel specs for :func:`make_kernel`, ``field:SEED`` or ``shakefield:SEED`` (methods get
            the shake's PSF at the image centre, :func:`shake_field_centre_psf`).
        images: names from :data:`deblur_ops.data.SAMPLES` (colour images are converted to grey).
        noise: noise standard deviations on the [0, 1] range.
        size: side of the central test crop.
        seed: base seed of the noise (each image/kernel pair gets its own).
        repeats: timed runs per method and image (>= 1).
        device: where :func:`deblur_ops.deblur` runs the methods (the skimage peers use the CPU);
            timings include the transfers.
        progress: optional ``progress(done, total)`` callback.
        forward: how ``field:SEED`` observations are made (:data:`FIELD_FORWARD_MODELS`).
        field_bank: the bank the solvers' ``MotionField`` blurs through (:data:`FIELD_BANKS`).

    Returns:
        Report dict with ``protocol``, ``results`` (one row per method spec, kernel, image,
        noise) and ``summary`` (per noise and method spec: per-kernel mean PSNR, mean
        PSNR/SSIM/seconds); with ``field:SEED`` kernels also ``model_error_db``, the noise-free
        PSNR of both banks against the exact blur per kernel and image (``psnr``: paper bank,
        ``psnr_fine``: fine bank).

    Raises:
        ValueError: unknown methods, kernels or images, non-positive size, negative noise.

    Example:
        >>> report = evaluate(["wiener"], ["motion:9:0"], ["camera"], [0.01], size=64)
        >>> sorted(report["summary"]["0.01"])
        ['blurred', 'wiener']
    """
    specs = list(method_specs)
    if not specs:
        raise ValueError(f"pass at least one method; choose from {available_methods()}")
    parsed = {spec: parse_method(spec) for spec in specs}
    bad_images = [i for i in images if i not in SAMPLES]
    if bad_images or not images:
        raise ValueError(f"unknown images {bad_images}; choose from {list(SAMPLES)}")
    if not kernels:
        raise ValueError("pass at least one kernel spec, e.g. motion:21:45")
    noise = [float(s) for s in noise]
    if not noise or any(not (math.isfinite(s) and s >= 0) for s in noise):
        raise ValueError(f"noise levels must be finite and >= 0, got {noise}")
    integer_at_least(size, "size", MIN_IMAGE_SIDE)
    integer_at_least(repeats, "repeats", 1)
    if field_bank not in FIELD_BANKS:
        raise ValueError(f"field_bank must be one of {FIELD_BANKS}, got {field_bank!r}")
    kernel_arrays = {spec: None if is_field(spec) else shake_field_centre_psf(spec) if is_shake_field(spec)
                     else make_kernel(spec) for spec in kernels}
    uniform_only = [spec for spec, (name, _) in parsed.items()
                    if name in PEERS or (METHODS[name].needs_psf and not METHODS[name].spatially_varying)]
    if uniform_only and any(is_field(k) for k in kernels):
        raise ValueError(f"methods {uniform_only} take uniform PSFs only and cannot run on motion fields "
                         f"{[k for k in kernels if is_field(k)]}; score them on separate runs")
    from ..data.noise import estimate_noise_sigma

    rows, warmed, model_error = [], set(), {}
    total, done = len(noise) * len(kernels) * len(images), 0
    for sigma in noise:
        for k_index, spec in enumerate(kernels):
            kernel = kernel_arrays[spec]
            for i_index, image_name in enumerate(images):
                item_seed = seed + 1000 * k_index + i_index
                if kernel is None:
                    clean, observed, field = degrade_field(image_name, spec, sigma, size, item_seed, forward,
                                                           field_bank)
                    if (spec, image_name) not in model_error:
                        model_error[spec, image_name] = [field_model_error(image_name, spec, size, bank)
                                                         for bank in FIELD_BANKS]
                elif is_shake_field(spec):
                    clean, observed = degrade_shake_field(image_name, spec, sigma, size, item_seed)
                else:
                    clean, observed = degrade(image_name, kernel, sigma, size, item_seed)
                base = {"kernel": spec, "image": image_name, "noise": sigma}
                p, s = _scores(observed, clean)
                rows.append({"method": "blurred", **base, "psnr": p, "ssim": s, "seconds": 0.0})
                sigma_hat = float(estimate_noise_sigma(torch.from_numpy(observed)[None, None]).mean())
                k_np = field if kernel is None else kernel.numpy()
                for method_spec, (name, method_params) in parsed.items():
                    if method_spec not in warmed:
                        _run(name, observed, k_np, sigma_hat, method_params, device)
                        warmed.add(method_spec)
                    timings = []
                    for _ in range(int(repeats)):
                        start = time.perf_counter()
                        estimate = _run(name, observed, k_np, sigma_hat, method_params, device)
                        timings.append(time.perf_counter() - start)
                    p, s = _scores(np.asarray(estimate), clean)
                    rows.append({"method": method_spec, **base, "psnr": p, "ssim": s, "seconds": min(timings)})
                done += 1
                if progress is not None:
                    progress(done, total)
    return {
        "protocol": {
            "methods": specs, "kernels": list(kernels), "images": list(images), "noise": noise,
            "size": int(size), "seed": seed, "repeats": int(repeats), "rl_iterations": RL_ITERATIONS,
            "forward": forward, "field_bank": field_bank,
            "device": str(device), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "date": datetime.date.today().isoformat(),
        },
        "results": rows,
        "summary": summarize(rows, kernels),
        **({"model_error_db": [{"kernel": k, "image": i, "psnr": paper, "psnr_fine": fine}
                                for (k, i), (paper, fine) in model_error.items()]}
           if model_error else {}),
    }


def summarize(rows: list[dict], kernels: Sequence[str]) -> dict:
    """Per noise level and method: mean PSNR per kernel, and mean PSNR, SSIM and seconds."""
    summary: dict = {}
    for sigma in sorted({r["noise"] for r in rows}):
        table = summary.setdefault(f"{sigma:g}", {})
        for name in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["noise"] == sigma and r["method"] == name]
            table[name] = {
                "psnr_per_kernel": [statistics.fmean(r["psnr"] for r in mine if r["kernel"] == k) for k in kernels],
                "psnr": statistics.fmean(r["psnr"] for r in mine),
                "ssim": statistics.fmean(r["ssim"] for r in mine),
                "seconds": statistics.fmean(r["seconds"] for r in mine),
            }
    return summary


def markdown(report: dict) -> str:
    """The summary as Markdown tables, one per noise level (PSNR per kernel, averages, runtime)."""
    proto = report["protocol"]
    lines = [f"Images {', '.join(proto['images'])} (grey, central {proto['size']}x{proto['size']} crops); "
             f"torch {proto['torch']}, {proto['torch_threads']} CPU threads; {proto['date']}."
             + (f" Motion-field observations made with the {proto['forward']} forward model."
                if any(is_field(k) for k in proto["kernels"]) and "forward" in proto else ""), ""]
    kernels = proto["kernels"]
    for sigma, table in report["summary"].items():
        lines.append(f"Noise sigma = {sigma}. Mean PSNR (dB) per kernel; kernels: "
                     + ", ".join(f"k{i + 1} = {k}" for i, k in enumerate(kernels)))
        lines.append("")
        header = ["method"] + [f"k{i + 1}" for i in range(len(kernels))] + ["PSNR", "SSIM", "s/image"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for name, s in table.items():
            cells = [name] + [f"{p:.2f}" for p in s["psnr_per_kernel"]]
            cells += [f"{s['psnr']:.2f}", f"{s['ssim']:.4f}", "-" if name == "blurred" else f"{s['seconds']:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if report.get("model_error_db"):
        errors = report["model_error_db"]

        def describe(key: str, name: str) -> str:
            per_kernel = {i: statistics.fmean(e[key] for e in errors if e["kernel"] == k)
                          for i, k in enumerate(kernels) if is_field(k)}
            return (f"{name} " + ", ".join(f"k{i + 1} {p:.1f}" for i, p in per_kernel.items())
                    + f" (all images: {min(e[key] for e in errors):.1f}-{max(e[key] for e in errors):.1f})")

        banks = [describe("psnr", "paper 004's 511-filter bank")]
        if "psnr_fine" in errors[0]:
            banks.append(describe("psnr_fine", "the fine bank (1 px, 2 degree steps)"))
        lines.append("Model error of the solvers' MotionField against the exact per-pixel lines, noise-free PSNR (dB) "
                     "per kernel: " + "; ".join(banks) + "; noise of sigma 0.01 alone: 40.0."
                     + (f" The solvers used the {proto['field_bank']} bank." if "field_bank" in proto else ""))
        lines.append("")
    return "\n".join(lines)


def evaluate_motion(kernels: Sequence[str] = NONUNIFORM_KERNELS, images: Sequence[str] = NONUNIFORM_IMAGES,
                    noise: Sequence[float] = DEFAULT_NOISE, *, size: int = NONUNIFORM_SIZE, seed: int = 0,
                    weights: str = "motion-net", forward: str = "exact") -> dict:
    """Motion estimation on the non-uniform protocol: paper 004 Table 2's motion MSE of Motion-Net.

    Each observation is made exactly as for :func:`evaluate` with ``field:SEED`` kernels (same
    seeds, same crops); :func:`deblur_ops.estimate_motion` predicts the field and
    :func:`deblur_ops.models.motion_mse` scores it against the true one. The blurred-input row is the
    MSE of predicting no motion (length 1 everywhere), for scale.

    Example:
        >>> report = evaluate_motion(["field:1"], ["camera"], [0.01], size=32)
        >>> sorted(report["summary"])
        ['no motion', 'weights']
    """
    from ..models import motion_mse
    from ..models.methods import estimate_motion

    bad = [k for k in kernels if not is_field(k)]
    if bad or not kernels:
        raise ValueError(f"motion evaluation needs field:SEED kernels, got {list(kernels)}")
    rows = []
    for sigma in (float(n) for n in noise):
        for k_index, spec in enumerate(kernels):
            for i_index, image_name in enumerate(images):
                _, observed, field = degrade_field(image_name, spec, sigma, size, seed + 1000 * k_index + i_index,
                                               forward)
                start = time.perf_counter()
                estimate = estimate_motion(observed, device="cpu", weights=weights)
                seconds = time.perf_counter() - start
                truth = (field.length[None].float(), field.angle[None].float())
                mse = float(motion_mse(estimate.length[None].float(), estimate.angle[None].float(), *truth)[0])
                none = float(motion_mse(torch.ones_like(truth[0]), torch.zeros_like(truth[1]), *truth)[0])
                rows.append({"kernel": spec, "image": image_name, "noise": sigma, "motion_mse": mse,
                             "no_motion_mse": none, "seconds": seconds,
                             "max_length": float(field.length.max())})
    summary = {"weights": {"motion_mse": statistics.mean(r["motion_mse"] for r in rows),
                           "seconds": statistics.mean(r["seconds"] for r in rows)},
               "no motion": {"motion_mse": statistics.mean(r["no_motion_mse"] for r in rows)}}
    return {"protocol": {"kernels": list(kernels), "images": list(images), "noise": [float(n) for n in noise],
                         "size": int(size), "seed": seed, "weights": weights, "forward": forward, "date": datetime.date.today().isoformat(),
                         "torch_threads": torch.get_num_threads()},
            "results": rows, "summary": summary}


def motion_markdown(report: dict) -> str:
    """The motion evaluation as a Markdown table, one row per case plus the means."""
    p = report["protocol"]
    lines = [f"# Motion estimation ({p['weights']}), paper 004 Table 2 metric", "",
             f"Fields {', '.join(p['kernels'])} on {', '.join(p['images'])} (grey, {p['size']}x{p['size']}), "
             f"noise {p['noise']}; {p['date']}. MSE = mean over pixels of min(|m' - m|^2, |m' + m|^2) / 2, "
             f"m = (l cos t, l sin t) in pixels.", "",
             "| field | image | longest motion (px) | Motion-Net MSE | no-motion MSE | s/image |",
             "|---|---|---:|---:|---:|---:|"]
    for r in report["results"]:
        lines.append(f"| {r['kernel']} | {r['image']} | {r['max_length']:.1f} | {r['motion_mse']:.2f} | "
                     f"{r['no_motion_mse']:.2f} | {r['seconds']:.3f} |")
    s = report["summary"]
    lines.append(f"| mean | | | {s['weights']['motion_mse']:.2f} | {s['no motion']['motion_mse']:.2f} | "
                 f"{s['weights']['seconds']:.3f} |")
    return "\n".join(lines) + "\n"


def save_motion(report: dict, directory) -> list[Path]:
    """Write ``<date>_evaluate_motion.json`` and ``.md`` into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{report['protocol']['date']}_evaluate_motion"
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    paths[0].write_text(json.dumps(report, indent=2))
    paths[1].write_text(motion_markdown(report))
    return paths


def save(report: dict, directory) -> list[Path]:
    """Write ``<date>_evaluate[_nonuniform].json`` and ``.md`` into ``directory``; returns the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    kind = "_nonuniform" if any(is_field(k) for k in report["protocol"]["kernels"]) else ""
    stem = out / f"{report['protocol']['date']}_evaluate{kind}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(report, indent=2))
    md_path.write_text(markdown(report) + "\n")
    return [json_path, md_path]


# Real-data protocols (`deblur evaluate --protocol microscopy|astronomy`). Methods are listed by
# name; a name this build does not register (e.g. a method merged later) is skipped with a note,
# and so is a method that rejects the data (e.g. 2D-only methods on a volume).
PROTOCOL_METHODS = {
    "microscopy": ("richardson_lucy", "richardson_lucy:psf=born_wolf", "sv_richardson_lucy",
                   "skimage_richardson_lucy", "wiener", "nu_cg", "irc"),
    "astronomy": ("richardson_lucy", "sv_richardson_lucy", "skimage_richardson_lucy", "nu_cg", "irc",
                  "irc:psf=central", "blind"),
}
PROTOCOL_SIZES = {"microscopy": (16, 64, 64), "astronomy": (96, 96)}
# Microscopy set-up: oil objective imaging 6 um deep into a watery sample, anisotropic voxels.
MICROSCOPE = {"wavelength_um": 0.52, "na": 1.4, "immersion_ri": 1.515, "sample_ri": 1.33, "depth_um": 6.0}
MICROSCOPY_VOXEL = (0.3, 0.1, 0.1)
CAMERA_OFFSET = 100.0
ASTRONOMY_PSF_ENERGY = 0.995
MICROSCOPY_BACKGROUND = 2.0


def _microscopy_scene(shape, seed: int) -> dict:
    from ..data.scenes import fft_convolve, widefield_volume

    depth, height, width = shape
    # The phantom (beads and filaments) of the plugin's widefield sample, re-blurred with a
    # Gibson-Lanni PSF: index mismatch (oil into water, 6 um deep) and 0.3 x 0.1 x 0.1 um voxels.
    clean = widefield_volume(shape, beads=max(4, height * width // 400), filaments=6, seed=seed).clean
    clean = clean / clean.max() * 300.0  # brightest voxel 300 photons before blur
    psf_shape = (min(depth, 17) - (1 - min(depth, 17) % 2), 31, 31)
    psf = psf_lib.gibson_lanni_psf(psf_shape, MICROSCOPY_VOXEL, **MICROSCOPE).float()
    born_wolf = psf_lib.born_wolf_psf(MICROSCOPE["wavelength_um"], MICROSCOPE["na"], MICROSCOPE["immersion_ri"],
                                      shape=psf_shape, voxel_size=MICROSCOPY_VOXEL)
    blurred = fft_convolve(torch.from_numpy(clean), psf).clamp_min(0)
    generator = torch.Generator().manual_seed(seed)
    # Poisson photons on a uniform background, then the camera adds its offset; the offset is a
    # known camera constant and is subtracted before restoration, the photon background is not.
    raw = torch.poisson(blurred + MICROSCOPY_BACKGROUND, generator=generator) + CAMERA_OFFSET
    observed = (raw - CAMERA_OFFSET).numpy()
    scale = float(clean.max())
    return {"observed": observed / scale, "clean": clean / scale, "psfs": {"true": psf.numpy(),
            "born_wolf": born_wolf.numpy()}, "grid": None, "note":
            f"widefield phantom {tuple(shape)} voxels of {MICROSCOPY_VOXEL} um; Gibson-Lanni PSF {psf_shape} "
            f"(NA {MICROSCOPE['na']} oil, sample n {MICROSCOPE['sample_ri']}, {MICROSCOPE['depth_um']} um deep); "
            f"Poisson noise, background {MICROSCOPY_BACKGROUND} photons, camera offset {CAMERA_OFFSET} "
            f"subtracted; peak 300 photons. 'psf=born_wolf': the matched-index model of the same optics"}


def _astronomy_scene(shape, seed: int) -> dict:
    from ..data.scenes import astronomy_field

    sample = astronomy_field(shape, (3, 3), stars=max(10, shape[0] * shape[1] // 550), seed=seed)
    # The methods get the node PSFs cropped to the box that keeps 99.5 % of the widest one's flux
    # (the scene was blurred with the full 55 x 55 PSFs): per-pixel filters cost k^2 in nu_cg / irc.
    nodes = sample.psf.reshape(-1, *sample.psf.shape[2:])
    side = max(psf_lib.prepare_psf(p, crop_energy=ASTRONOMY_PSF_ENERGY).shape[-1] for p in nodes)
    k = sample.psf.shape[-1]
    cut = slice(k // 2 - side // 2, k // 2 + side // 2 + 1)
    psfs = sample.psf[:, :, cut, cut] / sample.psf[:, :, cut, cut].sum((-2, -1), keepdims=True)
    gy, gx = psfs.shape[:2]
    scale = float(np.percentile(sample.clean[sample.clean > 0], 99.5))
    return {"observed": sample.blurred / scale, "clean": sample.clean / scale,
            "stars": np.argwhere(sample.clean > 1500),  # the scene's stars are single pixels of >= 2000
            "psfs": {"central": psfs[gy // 2, gx // 2]}, "grid": psf_lib.PSFGrid(psfs), "note":
            f"star field + galaxies {tuple(shape)}, Moffat beta 3 seeing varying across a 3x3 grid (FWHM 3-6 px), "
            f"sky 20 counts (Poisson, subtracted) and read noise 3; PSFs given to the methods cropped to {side}x{side} "
            f"({ASTRONOMY_PSF_ENERGY:.1%} of the flux); scores on the [0, 1] range of the 99.5th "
            f"percentile of the scene (the brightest stars saturate it); PSNR full: on the whole range, unclipped; "
            f"photometry: median relative error of the flux in 5x5 apertures at the stars. Uniform methods get "
            f"the central PSF, spatially varying ones the true grid unless psf=central"}


def _protocol_run(name: str, params: dict, scene: dict, protocol: str, device: str):
    """Result array, the PSF used, or raises; the ``psf`` pseudo-parameter picks the PSF. Blind
    methods get none (their PSF column reads "estimated")."""
    choice = params.pop("psf", None)
    if name in METHODS and not METHODS[name].needs_psf:
        if choice is not None:
            raise ValueError(f"{name} is blind: it takes no psf=")
        return deblur(scene["observed"].astype(np.float32), None, method=name, device=device, **params), "estimated"
    spatially_varying = name in METHODS and METHODS[name].spatially_varying
    if choice is None:
        choice = "true" if protocol == "microscopy" else ("grid" if spatially_varying else "central")
    if choice == "grid":
        if not spatially_varying or scene["grid"] is None:
            raise ValueError(f"{name} takes no PSF grid here")
        kernel = scene["grid"]
    elif choice in scene["psfs"]:
        kernel = scene["psfs"][choice]
    else:
        raise ValueError(f"psf={choice!r} is not one of {sorted(scene['psfs'])} or 'grid' for {protocol}")
    if isinstance(kernel, np.ndarray):
        return _run(name, scene["observed"].astype(np.float32), kernel.astype(np.float64) if name.startswith(
            "skimage") else kernel, 0.0, params, device), choice
    return deblur(scene["observed"].astype(np.float32), kernel, method=name, device=device, **params), choice


def evaluate_protocol(protocol: str, method_specs: Sequence[str] | None = None, *, shape=None, seed: int = 0,
                      device: str = "cpu") -> dict:
    """Score methods on the microscopy or astronomy protocol (PSNR, SSIM on [0, 1], seconds).

    Args:
        protocol: ``"microscopy"`` (3D widefield phantom, Gibson-Lanni PSF with index mismatch,
            anisotropic voxels, Poisson noise, camera offset) or ``"astronomy"`` (stars and
            galaxies, Moffat seeing varying across the field, sky, Poisson and read noise).
        method_specs: ``name`` or ``name:key=value,...``; ``psf=`` chooses the PSF (``true``,
            ``born_wolf`` for microscopy; ``central``, ``grid`` for astronomy). Default
            :data:`PROTOCOL_METHODS`. Names not available are skipped with a note.
        shape: scene shape (default :data:`PROTOCOL_SIZES`).
        seed: random seed of the scene and noise.
        device: device of the deblur_ops methods.

    Returns:
        Report with ``protocol``, ``results`` (one row per method that ran) and ``skipped``.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if protocol not in PROTOCOL_METHODS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOL_METHODS)}, got {protocol!r}")
    shape = tuple(PROTOCOL_SIZES[protocol] if shape is None else shape)
    scene = (_microscopy_scene if protocol == "microscopy" else _astronomy_scene)(shape, seed)
    clean = scene["clean"].astype(np.float64)

    def scores(estimate) -> dict:
        raw = np.asarray(estimate, np.float64)
        estimate = np.clip(raw, 0, 1)
        out = {"psnr": float(peak_signal_noise_ratio(np.clip(clean, 0, 1), estimate, data_range=1.0)),
               "ssim": float(structural_similarity(np.clip(clean, 0, 1), estimate, data_range=1.0))}
        if "stars" in scene:  # astronomy: what the clipped range hides, the stars' flux and peaks
            out["psnr_full"] = float(peak_signal_noise_ratio(clean, raw, data_range=float(clean.max())))
            boxes = [(slice(max(0, y - 2), y + 3), slice(max(0, x - 2), x + 3)) for y, x in scene["stars"]]
            out["photometry"] = float(np.median([abs(raw[b].sum() - clean[b].sum()) / clean[b].sum() for b in boxes]))
        return out

    rows = [{"method": "observed", "psf": "", **scores(scene["observed"]), "seconds": 0.0}]
    skipped = []
    for spec in PROTOCOL_METHODS[protocol] if method_specs is None else method_specs:
        name = str(spec).partition(":")[0]
        if name not in available_methods():
            skipped.append({"method": spec, "reason": "not available in this build"})
            continue
        _, params = parse_method(spec)
        start = time.perf_counter()
        try:
            estimate, used = _protocol_run(name, dict(params), scene, protocol, device)
        except (ValueError, NotImplementedError, RuntimeError) as exc:
            skipped.append({"method": spec, "reason": str(exc).splitlines()[0][:160]})
            continue
        seconds = time.perf_counter() - start
        rows.append({"method": spec, "psf": used, **scores(estimate), "seconds": seconds})
    from .bench import device_name

    return {"protocol": {"name": protocol, "shape": list(shape), "seed": seed, "note": scene["note"],
                         "device": device_name(torch.device(device)), "threads": torch.get_num_threads(),
                         "date": datetime.date.today().isoformat(), "torch": torch.__version__},
            "results": rows, "skipped": skipped}


def protocol_markdown(report: dict) -> str:
    """The protocol report as a Markdown table (methods in the order run), then the skipped ones."""
    p = report["protocol"]
    lines = [f"# deblur evaluate --protocol {p['name']} ({p['date']}, {p['device']}, torch {p['torch']})", "",
             f"{p['note']}. Seed {p['seed']}.", "",
             ]
    stars = bool(report["results"]) and "photometry" in report["results"][0]
    extra = " PSNR full (dB) | photometry error |" if stars else ""
    lines += [f"| method | PSF | PSNR (dB) | SSIM |{extra} seconds |",
              "|---|---|---:|---:|" + ("---:|---:|" if stars else "") + "---:|"]
    for r in report["results"]:
        more = f" {r['psnr_full']:.2f} | {r['photometry']:.3f} |" if stars else ""
        lines.append(f"| {r['method']} | {r['psf']} | {r['psnr']:.2f} | {r['ssim']:.3f} |{more} {r['seconds']:.2f} |")
    if report["skipped"]:
        lines += ["", "Skipped:", ""] + [f"- {s['method']}: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def save_protocol(report: dict, directory, markdown=None) -> list[Path]:
    """Write ``<date>_<cpu>_evaluate_<protocol>.json`` and ``.md`` (by ``markdown``, default
    :func:`protocol_markdown`) into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    from .bench import device_slug

    p = report["protocol"]
    stem = out / f"{p['date']}_{device_slug(p['device'])}_evaluate_{p['name']}"
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    paths[0].write_text(json.dumps(report, indent=2))
    paths[1].write_text((markdown or protocol_markdown)(report))
    return paths
