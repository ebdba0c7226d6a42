"""What the user surfaces can offer: each method's tunable parameters and the generated PSF models.

The CLI and the napari plugin build their options from these lists (read from the functions'
signatures), so a method or PSF model added to the package shows up in both without UI edits.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from ..psf import analytic as psf_models
from ..psf import gibson_lanni_psf, linear_motion_kernel
from ..restore import get_method

# Keyword arguments that are plumbing (hooks, array options), not knobs a user sets from a form.
_NOT_USER_PARAMETERS = {"callback", "dtype", "info"}


@dataclass(frozen=True)
class Parameter:
    """A user-settable parameter of a method or PSF model.

    Attributes:
        name: keyword name.
        default: default value; None means "chosen automatically" (or required, see ``required``).
        required: whether the function has no default for it.
        description: what it is, with its unit (for PSF models; empty for method parameters).
    """

    name: str
    default: object
    required: bool
    description: str = ""


def _parameters(function, skip_leading: int) -> list[Parameter]:
    found = []
    for p in list(inspect.signature(function).parameters.values())[skip_leading:]:
        if p.name in _NOT_USER_PARAMETERS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        required = p.default is inspect.Parameter.empty
        found.append(Parameter(p.name, None if required else p.default, required))
    return found


def method_parameters(method: str) -> list[Parameter]:
    """The keyword parameters of restoration method ``method`` that a user can set.

    Args:
        method: a name from :func:`deblur_ops.methods`.

    Raises:
        ValueError: unknown method.

    Example:
        >>> [p.name for p in method_parameters("richardson_lucy")][:2]
        ['iterations', 'acceleration']
    """
    return _parameters(get_method(method).function, skip_leading=2)


def _born_wolf(wavelength: float = 0.52, na: float = 1.2, refractive_index: float = 1.33,
               pixel_size: float = 0.1, z_step: float = 0.25, shape=None):
    return psf_models.born_wolf_psf(wavelength, na, refractive_index, shape=shape,
                                    voxel_size=(z_step, pixel_size, pixel_size))


def _gibson_lanni(wavelength: float = 0.52, na: float = 1.4, immersion_ri: float = 1.515,
                  sample_ri: float = 1.33, coverslip_ri: float = 1.515, coverslip_thickness: float = 170.0,
                  working_distance: float = 150.0, depth: float = 0.0, pixel_size: float = 0.1,
                  z_step: float = 0.25, shape=(31, 63, 63), *, model: str = "scalar", confocal: bool = False,
                  pinhole_au: float = 1.0, excitation_wavelength: float | None = None):
    return gibson_lanni_psf(shape, (z_step, pixel_size, pixel_size), wavelength_um=wavelength, na=na,
                            immersion_ri=immersion_ri, sample_ri=sample_ri, coverslip_ri=coverslip_ri,
                            coverslip_thickness_um=coverslip_thickness, working_distance_um=working_distance,
                            depth_um=depth, model=model, confocal=confocal, pinhole_au=pinhole_au,
                            excitation_wavelength_um=excitation_wavelength)


def _gibson_lanni_widefield(wavelength: float = 0.52, na: float = 1.4, immersion_ri: float = 1.515,
                            sample_ri: float = 1.33, coverslip_ri: float = 1.515, coverslip_thickness: float = 170.0,
                            working_distance: float = 150.0, depth: float = 0.0, pixel_size: float = 0.1,
                            z_step: float = 0.25, shape=(31, 63, 63)):
    return _gibson_lanni(wavelength, na, immersion_ri, sample_ri, coverslip_ri, coverslip_thickness,
                         working_distance, depth, pixel_size, z_step, shape)


def _vectorial_widefield(wavelength: float = 0.52, na: float = 1.4, immersion_ri: float = 1.515,
                         sample_ri: float = 1.33, coverslip_ri: float = 1.515, coverslip_thickness: float = 170.0,
                         working_distance: float = 150.0, depth: float = 0.0, pixel_size: float = 0.1,
                         z_step: float = 0.25, shape=(31, 63, 63)):
    return _gibson_lanni(wavelength, na, immersion_ri, sample_ri, coverslip_ri, coverslip_thickness,
                         working_distance, depth, pixel_size, z_step, shape, model="vectorial")


def _confocal(wavelength: float = 0.52, excitation_wavelength: float = 0.488, pinhole_au: float = 1.0,
              na: float = 1.4, immersion_ri: float = 1.515, sample_ri: float = 1.33, coverslip_ri: float = 1.515,
              coverslip_thickness: float = 170.0, working_distance: float = 150.0, depth: float = 0.0,
              pixel_size: float = 0.05, z_step: float = 0.15, shape=(21, 41, 41)):
    return _gibson_lanni(wavelength, na, immersion_ri, sample_ri, coverslip_ri, coverslip_thickness,
                         working_distance, depth, pixel_size, z_step, shape, model="vectorial", confocal=True,
                         pinhole_au=pinhole_au, excitation_wavelength=excitation_wavelength)


def _gaussian_physical(fwhm_xy: float = 0.25, fwhm_z: float = 0.0, pixel_size: float = 0.1,
                       z_step: float = 0.25, size=None):
    if fwhm_z == 0:
        return psf_models.gaussian_psf_physical(fwhm_xy, pixel_size, size)
    return psf_models.gaussian_psf_physical((fwhm_z, fwhm_xy, fwhm_xy), (z_step, pixel_size, pixel_size), size)


def _moffat_seeing(seeing: float = 1.2, beta: float = 3.0, pixel_scale: float = 0.3, size=None):
    return psf_models.moffat_psf(seeing, beta, size, pixel_scale=pixel_scale)


def _airy(wavelength: float = 0.52, na: float = 1.2, pixel_size: float = 0.1, size=None):
    return psf_models.airy_psf(wavelength, na, pixel_size, size)


def _gaussian(sigma: float = 2.0, size=None, angle_deg: float = 0.0):
    return psf_models.gaussian_psf(sigma, size, angle_deg=angle_deg)


def _moffat(fwhm: float = 4.0, beta: float = 3.0, size=None):
    return psf_models.moffat_psf(fwhm, beta, size)


def _motion(length: float = 15.0, angle: float = 0.0, size=None):
    return linear_motion_kernel(length, angle, size)


# Defaults make every model usable with no argument (a form shows them as initial values);
# optics are in micrometres, seeing in arcseconds. Microscopy models take scalar pixel_size and
# z_step (one form field each) and pass voxel_size=(z_step, pixel_size, pixel_size) on.
PSF_MODELS = {
    "gaussian": _gaussian,
    "gaussian_um": _gaussian_physical,
    "airy": _airy,
    "born_wolf": _born_wolf,
    "gibson_lanni": _gibson_lanni_widefield,
    "vectorial": _vectorial_widefield,
    "confocal": _confocal,
    "moffat": _moffat,
    "moffat_seeing": _moffat_seeing,
    "motion": _motion,
}

# What each PSF-model parameter is, with its unit (the CLI help and the plugin's tooltips show it).
PSF_PARAMETER_DESCRIPTIONS = {
    "sigma": "Gaussian standard deviation, pixels",
    "size": "odd side (or sides) of the PSF, pixels; empty: automatic",
    "shape": "odd (D, H, W) of the PSF, voxels; empty: automatic",
    "angle_deg": "rotation of the Gaussian's x axis, degrees counter-clockwise",
    "fwhm": "full width at half maximum, pixels",
    "fwhm_xy": "lateral full width at half maximum, µm",
    "fwhm_z": "axial full width at half maximum, µm (0: a 2D PSF)",
    "beta": "Moffat power-law index (> 1; 2.5-4.8 for ground-based seeing)",
    "seeing": "seeing FWHM, arcsec",
    "pixel_scale": "pixel scale on the sky, arcsec per pixel",
    "wavelength": "emission wavelength, µm",
    "excitation_wavelength": "excitation wavelength, µm",
    "na": "numerical aperture of the objective",
    "refractive_index": "refractive index of the immersion medium (and sample)",
    "immersion_ri": "refractive index of the immersion medium (oil 1.515, water 1.333)",
    "sample_ri": "refractive index of the sample (cells ~1.33-1.38)",
    "coverslip_ri": "refractive index of the coverslip (1.515 for glass)",
    "coverslip_thickness": "coverslip thickness, µm (170 for #1.5)",
    "working_distance": "design thickness of the immersion layer, µm",
    "depth": "depth of the imaged plane below the coverslip, µm",
    "pinhole_au": "confocal pinhole diameter, Airy units",
    "pixel_size": "lateral pixel size in the sample, µm",
    "z_step": "distance between planes, µm",
    "length": "motion length, pixels",
    "angle": "motion angle, degrees counter-clockwise from +x",
}


def psf_parameters(model: str) -> list[Parameter]:
    """The parameters of PSF model ``model`` with their defaults.

    Raises:
        ValueError: unknown model.

    Example:
        >>> [p.name for p in psf_parameters("motion")]
        ['length', 'angle', 'size']
    """
    _check_model(model)
    return [Parameter(p.name, p.default, p.required, PSF_PARAMETER_DESCRIPTIONS.get(p.name, ""))
            for p in _parameters(PSF_MODELS[model], skip_leading=0)]


def _check_model(model: str) -> None:
    if model not in PSF_MODELS:
        raise ValueError(f"unknown PSF model {model!r}; choose one of {sorted(PSF_MODELS)}")


# The largest PSF side a generated model may have: larger ones are typos (a length of 1e9 px
# asked the allocator for exabytes) and no image a PSF can sensibly blur needs them.
MAX_PSF_SIDE = 4097


def _check_extent(model: str, params: dict) -> None:
    """Refuse parameters whose PSF would exceed :data:`MAX_PSF_SIDE`, before anything is allocated."""
    # Sides the models choose by default: a motion line spans its length, a Gaussian about 8 sigma,
    # a Moffat profile (beta >= ~1.5) about 8 FWHM.
    extents = {"length": 1.0, "sigma": 8.0, "fwhm": 8.0}
    for name, per_unit in extents.items():
        value = params.get(name)
        if isinstance(value, (int, float)) and abs(value) * per_unit > MAX_PSF_SIDE:
            raise ValueError(f"{model} PSF with {name}={value:g} would be about {abs(value) * per_unit:.3g} px wide, "
                             f"more than the {MAX_PSF_SIDE} px limit; check the units (pixels)")
    # Optical models in physical units: the default side covers a few Airy radii (0.61 lambda / NA)
    # in pixels, so a pixel size typed in the wrong unit (nm for um) asks for a huge PSF.
    wavelength = next((params[k] for k in ("wavelength", "wavelength_um") if k in params), None)
    pixel = params.get("pixel_size")
    if isinstance(wavelength, (int, float)) and isinstance(pixel, (int, float)) and pixel > 0 and \
            isinstance(params.get("na"), (int, float)) and params["na"] > 0 and "size" not in params \
            and "shape" not in params:
        side = 8 * 0.61 * wavelength / params["na"] / pixel
        if side > MAX_PSF_SIDE:
            raise ValueError(f"{model} PSF with wavelength={wavelength:g}, na={params['na']:g} and pixel_size="
                             f"{pixel:g} would be about {side:.3g} px wide, more than the {MAX_PSF_SIDE} px "
                             f"limit; wavelength and pixel_size take the same unit (um)")
    for name in ("size", "shape"):
        value = params.get(name)
        sides = [value] if isinstance(value, (int, float)) else list(value or [])
        if any(isinstance(v, (int, float)) and v > MAX_PSF_SIDE for v in sides):
            raise ValueError(f"{model} PSF {name}={value} exceeds the {MAX_PSF_SIDE} px limit per side")


def make_psf(model: str, **params) -> np.ndarray:
    """A generated PSF as a float32 NumPy array summing to 1.

    Args:
        model: a key of :data:`PSF_MODELS`: ``gaussian`` (sigma, size, angle_deg in pixels),
            ``gaussian_um`` (fwhm_xy, fwhm_z, pixel_size, z_step in µm), ``airy`` (wavelength, na,
            pixel_size, size), ``born_wolf`` (3D: wavelength, na, refractive_index, pixel_size,
            z_step, shape), ``gibson_lanni`` / ``vectorial`` (3D widefield with index mismatch,
            :func:`deblur_ops.psf.gibson_lanni_psf`), ``confocal`` (the same with excitation and a
            pinhole), ``moffat`` (fwhm in pixels, beta, size), ``moffat_seeing`` (seeing in arcsec,
            beta, pixel_scale in arcsec/pixel), ``motion`` (length, angle, size). Units:
            :data:`PSF_PARAMETER_DESCRIPTIONS`.
        **params: the model's parameters; missing ones take the defaults of :func:`psf_parameters`.

    Raises:
        ValueError: unknown model or parameter, or a parameter the model rejects.

    Example:
        >>> make_psf("gaussian", sigma=1.5).shape
        (13, 13)
    """
    _check_model(model)
    known = {p.name for p in psf_parameters(model)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"PSF model {model!r} does not take {unknown}; it takes {sorted(known)}")
    _check_extent(model, params)
    return np.ascontiguousarray(PSF_MODELS[model](**params).numpy(), dtype=np.float32)


@dataclass(frozen=True)
class ParameterInfo:
    """How a form presents a parameter: a human label, its unit, a tooltip, and the allowed choices.

    Attributes:
        label: what the form shows instead of the keyword name.
        tooltip: one sentence on what the parameter does (and what an empty field means).
        unit: physical or pixel unit shown after the label ("" when unitless).
        choices: the accepted strings, for a dropdown; empty when the value is free.
        kind: ``float`` or ``int`` for parameters whose default is None ("automatic"), so the form
            can still parse a number typed into them; None when the default's type says it.
    """

    label: str
    tooltip: str
    unit: str = ""
    choices: tuple[str, ...] = ()
    kind: type | None = None


# Keyed by keyword name: the same name means the same thing in every method and PSF model.
PARAMETER_INFO = {
    # restoration methods
    "iterations": ParameterInfo("iterations", "more iterations sharpen more and amplify more noise"),
    "acceleration": ParameterInfo("acceleration", "biggs_andrews extrapolates between iterations: the same "
                                  "result in fewer iterations", choices=("none", "biggs_andrews")),
    "tv_weight": ParameterInfo("TV weight", "total-variation regularisation: 0 is plain Richardson-Lucy; "
                               "~0.002 keeps noise from growing into speckles"),
    "init": ParameterInfo("start from", "'observed' starts from the image; a positive number starts from a flat "
                          "image of that value"),
    "padding": ParameterInfo("border padding", "how the image is extended past its border while restoring "
                             "(reflect avoids ringing at the edges)", choices=("reflect", "circular", "zeros")),
    "weight": ParameterInfo("prior weight λ", "strength of the smoothness prior; empty: chosen from the noise "
                            "level", kind=float),
    "noise_sigma": ParameterInfo("noise σ", "standard deviation of the noise in image units; empty: estimated "
                                 "from the image", kind=float),
    "sparsity": ParameterInfo("kernel sparsity", "weight of the estimated kernel's sparsity prior: 0.3 keeps "
                              "small blurs compact; 0 suits long camera shake (27-35 px)"),
    "dark_channel": ParameterInfo("dark channel", "weight of the latent image's dark-channel prior in the "
                                  "kernel estimate: 0 is off; 1 can help pictures with dark regions (text, night "
                                  "scenes); it helped on development photos, not on held-out ones"),
    "rho": ParameterInfo("ADMM penalty ρ", "coupling of the ADMM splitting; empty: automatic", kind=float),
    "rho_growth": ParameterInfo("ρ growth", "factor applied to ρ after every iteration (1: constant)"),
    "isotropic": ParameterInfo("isotropic TV", "penalise the gradient magnitude instead of each direction"),
    "balance": ParameterInfo("balance (1/SNR)", "regularisation of the Wiener filter; empty: chosen from the "
                             "noise level", kind=float),
    "regularizer": ParameterInfo("regulariser", "identity: classical Wiener; laplacian: smoother (skimage's "
                                 "default)", choices=("identity", "laplacian")),
    "prior": ParameterInfo("prior", "tv keeps edges sharp; l2 is smoother and faster", choices=("tv", "l2")),
    "cg_iterations": ParameterInfo("CG steps per iteration", "conjugate-gradient steps of each x update"),
    "tolerance": ParameterInfo("CG tolerance", "relative residual at which a conjugate-gradient solve stops"),
    "stages": ParameterInfo("ADMM stages", "ADMM iterations; empty: the method's default", kind=int),
    "irc_iterations": ParameterInfo("IRC steps per stage", "residual-compensation steps inside each stage"),
    "inverse": ParameterInfo("inverse filters", "grid: computed for the PSFs on a grid; bank: the 511 precomputed "
                             "motion filters", choices=("grid", "bank")),
    "grid_spacing": ParameterInfo("inverse grid spacing", "pixels between the nodes where inverse filters are "
                                  "computed", unit="px"),
    "filter_size": ParameterInfo("inverse filter size", "side of each inverse filter; empty: automatic", unit="px",
                                 kind=int),
    "momentum": ParameterInfo("momentum", "extrapolation between stages; empty: the method's default", kind=float),
    "steps": ParameterInfo("steps", "gradient-descent steps"),
    "step_size": ParameterInfo("step size", "gradient-descent step length"),
    "max_steps": ParameterInfo("max steps", "upper bound on the recurrent steps"),
    "tol": ParameterInfo("stop tolerance", "stop when the relative change of an update falls below this"),
    "snr_db": ParameterInfo("SNR", "signal-to-noise ratio the Wiener filter assumes", unit="dB"),
    "bilateral": ParameterInfo("bilateral filter", "smooth the result with an edge-preserving filter"),
    "weights": ParameterInfo("trained weights", "name of the shipped weights to load"),
    "motion_weights": ParameterInfo("Motion-Net weights", "name of the shipped Motion-Net weights whose blur length "
                                    "sets the kernel's support"),
    "end_to_end": ParameterInfo("end-to-end network", "weights of paper 004's end-to-end network (blind-irc) to run "
                                "it instead of estimating a kernel (it denoises, does not deblur); empty: estimate"),
    # PSF models
    "sigma": ParameterInfo("σ", "standard deviation of the Gaussian", unit="px"),
    "size": ParameterInfo("size", "odd side of the PSF array; empty: automatic", unit="px", kind=int),
    "angle_deg": ParameterInfo("angle", "orientation of the major axis, counter-clockwise from +x", unit="°"),
    "wavelength": ParameterInfo("emission wavelength", "wavelength of the detected light", unit="µm"),
    "na": ParameterInfo("numerical aperture (NA)", "of the objective"),
    "refractive_index": ParameterInfo("immersion refractive index", "1.0 air, 1.33 water, 1.518 oil"),
    "pixel_size": ParameterInfo("pixel size", "lateral sampling of the image (in the sample plane)", unit="µm"),
    "z_step": ParameterInfo("z step", "axial sampling of the stack", unit="µm"),
    "shape": ParameterInfo("PSF shape (z, y, x)", "voxels, e.g. 17,33,33; empty: automatic", unit="px"),
    "fwhm": ParameterInfo("FWHM (seeing)", "full width at half maximum of the star images", unit="px"),
    "beta": ParameterInfo("Moffat β", "wing exponent: smaller gives heavier wings (2.5-4.5 typical)"),
    "length": ParameterInfo("blur length", "full extent of the motion", unit="px"),
    "angle": ParameterInfo("angle", "direction of the motion, counter-clockwise from +x", unit="°"),
}


def parameter_info(name: str) -> ParameterInfo:
    """The form's label, unit, tooltip and choices for parameter ``name`` (a plain fallback if unlisted).

    Example:
        >>> parameter_info("padding").choices
        ('reflect', 'circular', 'zeros')
        >>> parameter_info("some_new_knob").label
        'some new knob'
    """
    return PARAMETER_INFO.get(name, ParameterInfo(name.replace("_", " "), name.replace("_", " ")))


# What kind of data each method is meant for, so a form can offer the suitable ones first.
# "fluorescence": widefield/confocal stacks (Poisson, 3D PSFs); "astronomy": stars and galaxies;
# "photo": pictures of everyday scenes; "volume": restores (D, H, W) blocks with a 3D PSF.
METHOD_SUITS = {
    "richardson_lucy": ("fluorescence", "astronomy", "volume", "photo"),
    "wiener": ("fluorescence", "astronomy", "volume", "photo"),
    "admm_tv": ("fluorescence", "photo", "volume"),
    "nu_cg": ("photo", "astronomy"),
    "irc": ("photo", "astronomy"),
    "gradient-descent": (),
    "wiener-bilateral": ("photo",),
    "irc-net": ("photo",),
    "tv-irc": ("photo",),
    "blind-irc": ("photo",),
    "autoencoder": ("photo",),
    "madn": ("photo",),
    "rgdm": ("photo",),
    "wiener-stack-net": ("photo",),
}

# Networks whose weights were trained on photographs: on microscopy or astronomy data they
# restore what photos look like, so forms flag them.
TRAINED_ON_PHOTOS = frozenset({"irc-net", "tv-irc", "blind-irc", "autoencoder", "madn", "rgdm", "wiener-stack-net"})
