"""The `deblur` command: demo, run, train, models, bench, doctor, evaluate."""
from __future__ import annotations

import argparse
import json
import re
import sys


def _doctor(args) -> int:
    import torch

    from .. import __version__, _extension

    cuda = torch.cuda.is_available()
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    print(f"deblur-ops {__version__}")
    print(f"torch      {torch.__version__} ({build}), {torch.get_num_threads()} CPU threads")
    if _extension.LOADED:
        from .. import _C

        print(f"extension  loaded from {_C.__file__}")
    else:
        print(f"extension  NOT loaded ({_extension.LOAD_ERROR}); using pure-PyTorch references")
    print(f"CUDA       {'available: ' + torch.cuda.get_device_name(0) if cuda else 'not available'}")
    print("backends   (op: cpu / cuda)")
    cpu, gpu = _extension.backend("cpu"), _extension.backend("cuda")
    for op in _extension.OPS:
        print(f"  {op:18s} {cpu[op]:9s} / {gpu[op]}{'' if cuda else ' (no CUDA device)'}")
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    result = run_demo(args.image, method=args.method, length=args.length, angle=args.angle,
                      noise_sigma=args.noise, size=args.size, seed=args.seed, output=args.output,
                      device=args.device)
    print(result.summary())
    return 0


def _emit(report: dict, markdown, save, args) -> None:
    """Print a report as Markdown; write it as JSON (--json) and into a results folder (--save)."""
    print(markdown(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    if args.save:
        for path in save(report, args.save):
            print(f"wrote {path}")


def _bench(args) -> int:
    import torch

    from . import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    report = bench.run(args.ops, device=args.device, size=args.size,
                       shrink_shape=args.shrink_shape, nu_conv_size=args.nu_conv_size,
                       warmup=args.warmup, repeats=args.repeats, irc_shape=_pair(args.irc_shape, "--irc-shape"),
                       cpu_peers=args.cpu_peers, rl_shape=_triple(args.rl_shape, "--rl-shape"))
    _emit(report, bench.markdown, bench.save, args)
    return 0


def _evaluate(args) -> int:
    from . import evaluate

    if args.nonuniform or args.motion:  # paper 004 Table 3 set-up wherever the user kept the Table 1 defaults
        for key, uniform, nonuniform in (
                ("methods", evaluate.DEFAULT_METHODS, evaluate.NONUNIFORM_METHODS),
                ("kernels", evaluate.DEFAULT_KERNELS, evaluate.NONUNIFORM_KERNELS),
                ("images", evaluate.DEFAULT_IMAGES, evaluate.NONUNIFORM_IMAGES),
                ("size", 256, evaluate.NONUNIFORM_SIZE)):
            if getattr(args, key) == (list(uniform) if isinstance(uniform, tuple) else uniform):
                setattr(args, key, list(nonuniform) if isinstance(nonuniform, tuple) else nonuniform)
    if args.span_kernels and not args.blind:
        raise ValueError("--span-kernels belongs to the blind protocol: add --blind")
    if args.blind:
        from . import evaluate_blind as eb

        specs = list(eb.BLIND_METHODS) if args.methods == list(evaluate.DEFAULT_METHODS) else args.methods
        images = list(eb.BLIND_IMAGES) if args.images == list(evaluate.DEFAULT_IMAGES) else args.images
        size = eb.BLIND_SIZE if args.size == 256 else args.size
        noise = args.noise[0] if len(args.noise) == 1 else None
        if noise is None:
            raise ValueError("--blind takes one --noise level")
        report = eb.evaluate_blind(specs, images, args.sides or eb.BLIND_SIDES, noise=noise, size=size,
                                   seed=args.seed, span=args.span_kernels, device=args.device,
                                   progress=lambda done, total: print(f"  {done}/{total} cases", file=sys.stderr))
        _emit(report, eb.blind_markdown, eb.save_blind, args)
        return 0
    if args.protocol is not None:
        specs = None if args.methods == list(evaluate.DEFAULT_METHODS) else args.methods
        report = evaluate.evaluate_protocol(args.protocol, specs, seed=args.seed, device=args.device,
                                            shape=args.shape)
        _emit(report, evaluate.protocol_markdown, evaluate.save_protocol, args)
        return 0
    if args.motion:
        report = evaluate.evaluate_motion(args.kernels, args.images, args.noise, size=args.size, seed=args.seed,
                                          forward=args.forward)
        _emit(report, evaluate.motion_markdown, evaluate.save_motion, args)
        return 0
    report = evaluate.evaluate(args.methods, args.kernels, args.images, args.noise, size=args.size,
                               seed=args.seed, repeats=args.repeats, device=args.device, forward=args.forward,
                               field_bank=args.field_bank,
                               progress=lambda done, total: print(f"  {done}/{total} images", file=sys.stderr))
    _emit(report, evaluate.markdown, evaluate.save, args)
    return 0


def _background(text: str | None):
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--psf-background takes 'auto' or a number, got {text!r}") from None


def _voxel_size(given, option: str, path, io):
    """(sizes, unit, source) from the option or the file's metadata; None when unknown."""
    if given is None:
        return io.read_voxel_size(path)
    sizes = tuple(float(s) for s in given)
    if min(sizes) <= 0:
        raise ValueError(f"{option} must be positive sizes, got {given}")
    return sizes, "um", option


def _voxel_text(voxel, option: str) -> str:
    if voxel is None:
        return f"unknown (no physical size in the file's metadata; {option} z,y,x in um sets it)"
    sizes, unit, source = voxel
    return f"{', '.join(f'{s:g}' for s in sizes)} {unit} ({source})"


def _run(args) -> int:
    from ..psf import prepare_psf
    from . import catalog, io
    from .run import run

    from ..restore import get_method

    if args.psf is not None and args.psf_model is not None:
        raise ValueError("give one of --psf FILE or --psf-model MODEL, not both")
    blind = args.method is not None and not get_method(args.method).needs_psf
    if blind and (args.psf is not None or args.psf_model is not None):
        raise ValueError(f"method {args.method!r} is blind: it estimates the blur itself; drop --psf/--psf-model, "
                         f"or use a non-blind method such as irc-net with your PSF")
    if not blind and args.psf is None and args.psf_model is None:
        raise ValueError("give --psf FILE or --psf-model MODEL (e.g. --psf-model gaussian --sigma 2), or a blind "
                         "method (--method blind estimates the PSF and writes it next to the output)")
    model_args = {name: getattr(args, name) for name in _PSF_OPTIONS if getattr(args, name) is not None}
    voxel = _voxel_size(args.voxel_size, "--voxel-size", args.input, io)
    if args.psf is not None:
        if model_args:
            raise ValueError(f"{sorted(model_args)} describe a generated PSF; drop them or --psf")
        data = io.read_image(args.psf).data
        psf_voxel = _voxel_size(args.psf_voxel_size, "--psf-voxel-size", args.psf, io)
    if args.psf is not None and len(data.shape) == 4:  # (gy, gx, kh, kw): PSFs measured across the field
        import numpy as np

        from ..psf import PSFGrid

        psf, resample = PSFGrid(np.asarray(data, dtype=np.float64)), {}
        if args.method is None:
            args.method = "sv_richardson_lucy"
    elif args.psf is not None:
        resample = {}
        if voxel is not None and psf_voxel is not None and voxel[1] == psf_voxel[1]:
            n = len(data.shape)
            if len(voxel[0]) < n or len(psf_voxel[0]) < n:
                raise ValueError(f"the PSF is {n}D but the voxel sizes {voxel[0]} / {psf_voxel[0]} have fewer "
                                 f"axes; pass --voxel-size / --psf-voxel-size with {n} values")
            resample = {"voxel_size": voxel[0][-n:], "psf_voxel_size": psf_voxel[0][-n:]}
        psf = prepare_psf(data, center=args.psf_center, crop_energy=args.psf_crop_energy,
                          background=_background(args.psf_background), **resample).numpy()
    elif blind:
        psf = None
    else:
        if voxel is not None:  # optical models sample at the data's voxel size unless told otherwise
            takes = {p.name for p in catalog.psf_parameters(args.psf_model)}
            sizes, unit, _ = voxel
            fill = {"pixel_size": sizes[-1], "z_step": sizes[0] if len(sizes) == 3 else None} if unit == "um" \
                else {"pixel_scale": sizes[-1]}
            for name, value in fill.items():
                if name in takes and name not in model_args and value is not None:
                    model_args[name] = value
                    print(f"deblur run: --{name.replace('_', '-')} {value:g} from the voxel size", file=sys.stderr)
        psf = catalog.make_psf(args.psf_model, **model_args)
    if args.method is None:
        args.method = "wiener"
    params = dict(args.param)
    summary = run(args.input, args.output, psf, method=args.method, loop_axes=args.axis, chunks=args.chunks,
                  halo=args.halo, device=args.device, scheduler=args.scheduler, output_dtype=args.output_dtype,
                  progress=not args.quiet, overwrite=args.overwrite, resume=args.resume, hdu=args.hdu,
                  nan=args.nan, **params)
    summary["voxel_size"] = _voxel_text(voxel, "--voxel-size")
    if args.psf is not None:
        summary["psf_voxel_size"] = _voxel_text(psf_voxel, "--psf-voxel-size") + (
            "; resampled to the input's" if resample else "")
    if summary.get("clipped_pixels"):
        print(f"deblur run: {summary['clipped_pixels']} pixels fell outside the {summary['dtype']} range and were "
              f"clipped; --output-dtype float32 keeps them", file=sys.stderr)
    if summary.get("caution"):
        print(f"deblur run: {summary['caution']}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


def _train(args) -> int:
    from pathlib import Path

    import torch

    from ..models.pretrained import WEIGHTS_DIR
    from ..train import RECIPES, TrainOptions, recipes

    available = recipes()
    if args.list or not args.model:
        for name, description in available.items():
            print(f"{name:18s} {description}")
        return 0 if args.list else 2
    if args.model not in RECIPES:
        raise ValueError(f"unknown model {args.model!r}; trainable: {sorted(available)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path(f"{args.model}.pt")
    if args.install:
        out = WEIGHTS_DIR / f"{_INSTALL_NAMES.get(args.model, args.model)}.pt"
    options = TrainOptions(steps=args.steps, batch_size=args.batch_size, patch=args.patch, lr=args.lr,
                           seed=args.seed, out=out, checkpoint=Path(args.checkpoint) if args.checkpoint else None,
                           resume=args.resume, device=args.device, images=args.images, progress=not args.quiet,
                           validate_every=args.validate_every, extra=dict(args.set))
    info = RECIPES[args.model].run(options)
    summary = {k: info[k] for k in ("steps", "seconds", "device", "validation_psnr", "validation_input_psnr",
                                    "validation_motion_mse") if info.get(k) is not None}
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}")
    return 0


def _models(args) -> int:
    from ..models.pretrained import PRETRAINED, read_weights

    for name, entry in sorted(PRETRAINED.items()):
        if not entry.path.exists():
            print(f"{name:18s} {entry.description} [not shipped]")
            continue
        info = read_weights(entry.path)["info"]
        facts = [f"{info.get('steps')} steps x {info.get('batch_size')}", f"{info.get('seconds')} s",
                 str(info.get("device"))]
        if info.get("validation_psnr") is not None:
            facts.append(f"validation {info['validation_psnr']:.2f} dB (blurred {info['validation_input_psnr']:.2f} dB)")
        if info.get("validation_motion_mse") is not None:
            facts.append(f"validation motion MSE {info['validation_motion_mse']:.1f}")
        print(f"{name:18s} {entry.description}\n{'':18s} {'; '.join(facts)}; "
              f"{entry.path.stat().st_size / 1e6:.2f} MB")
        if args.verbose:
            print(json.dumps(info, indent=2))
    return 0


# recipe name -> registry name of the weights it makes (for --install)
_INSTALL_NAMES = {"irc": "irc-motion", "motion": "motion-net", "blind": "blind-irc"}


def _key_value(text: str) -> tuple[str, object]:
    key, eq, value = text.partition("=")
    if not eq or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE like iterations=20, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _psf_options() -> dict[str, tuple[type, list[str], str]]:
    """Option name -> (type, the PSF models that take it, description with unit), from the models' signatures."""
    from . import catalog

    options = {}
    for model in catalog.PSF_MODELS:
        for parameter in catalog.psf_parameters(model):
            kind = _ints if parameter.name in ("size", "shape") else float
            options.setdefault(parameter.name, (kind, [], parameter.description))[1].append(model)
    return options


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int) or len(value) != 2:
        raise ValueError(f"{name} takes two sizes H,W, got {value!r}")
    return tuple(value)


def _triple(value, name: str) -> tuple[int, int, int]:
    if isinstance(value, int) or len(value) != 3:
        raise ValueError(f"{name} takes three sizes D,H,W, got {value!r}")
    return tuple(value)


def _ints(text: str) -> int | tuple[int, ...]:
    values = _int_list(text)
    return values[0] if len(values) == 1 else values


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,256,256, got {text!r}") from None


_PSF_OPTIONS = _psf_options()


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.3,0.1,0.1, got {text!r}") from None


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 8,64,256,256, got {text!r}")
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected at least (B, C) positive sizes, got {text!r}")
    return shape


def build_parser() -> argparse.ArgumentParser:
    from .bench import OPS
    from ..data import SAMPLES
    from .demo import DEFAULT_METHOD

    parser = argparse.ArgumentParser(prog="deblur", description="Learned and classical image deconvolution.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="show torch, extension, CUDA and the backend of each op")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("demo", help="blur a built-in image with a known motion PSF, restore it, report PSNR")
    p.add_argument("--image", default="astronaut", choices=SAMPLES)
    p.add_argument("--method", default=DEFAULT_METHOD,
                   help=f"any of `deblur_ops.methods()` (default {DEFAULT_METHOD})")
    p.add_argument("--length", type=float, default=21, help="motion length in pixels (default 21)")
    p.add_argument("--angle", type=float, default=30, help="motion angle in degrees (default 30)")
    p.add_argument("--noise", type=float, default=0.01, help="Gaussian noise sigma on [0,1] images")
    p.add_argument("--size", type=int, default=512, help="central crop size (default 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="deblur_demo.png", help="side-by-side PNG ('' to skip)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_demo)

    p = sub.add_parser("bench", help="time custom ops vs pure PyTorch vs peers")
    p.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--size", type=int, default=1024, help="image side for wiener_stack (default 1024)")
    p.add_argument("--shrink-shape", type=_shape, default=(8, 64, 256, 256),
                   help="B,C,H,W for learnable_shrink (default 8,64,256,256)")
    p.add_argument("--nu-conv-size", type=int, default=512,
                   help="image side for nu_conv (default 512; 2048 is the GPU target size)")
    p.add_argument("--irc-shape", type=_ints, default=(375, 500),
                   help="H,W of the RGB photo for irc_net and irc (default 375,500, paper 004's setting)")
    p.add_argument("--rl-shape", type=_ints, default=(32, 256, 256),
                   help="D,H,W of the volume for richardson_lucy (default 32,256,256)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-cpu-peers", dest="cpu_peers", action="store_false",
                   help="leave out peers that run on the CPU whatever --device is (skimage's Wiener "
                        "takes minutes of repeats at --size 2048)")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.add_argument("--save", metavar="DIR", help="write <date>_<device>.json/.md into DIR "
                   "(e.g. benchmarks/results)")
    p.set_defaults(func=_bench)

    from . import catalog
    from ..api import methods

    p = sub.add_parser("run", help="restore an image file (TIFF, PNG, FITS, Zarr, OME-Zarr); big stacks chunk-wise")
    p.add_argument("input")
    p.add_argument("output", help="output file; the format follows the suffix")
    p.add_argument("--method", choices=sorted(methods()),
                   help="default: wiener; sv_richardson_lucy for a PSF grid file (gy, gx, kh, kw); 'blind' needs "
                        "no PSF: it estimates one (--param psf_size=31, odd, px) and writes it to <output>_psf.tif")
    p.add_argument("--param", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                   help="a method parameter, e.g. --param iterations=20 (repeatable)")
    p.add_argument("--psf", help="PSF image file (any input format; even sides have their centre at N/2 as in "
                   "DeconvolutionLab2); prepared by deblur_ops.psf.prepare_psf: odd sizes, cropped, sum 1")
    p.add_argument("--nan", choices=("fill", "mask"),
                   help="NaN/Inf pixels (masked or dead pixels): fill replaces them by the median of the other "
                        "pixels; mask also puts NaN back there in the output (default: refuse them)")
    p.add_argument("--hdu", help="FITS input: the image HDU to restore, an index or EXTNAME (default: the first "
                   "with data); a FITS output keeps every HDU, the restored image in the one it came from")
    p.add_argument("--voxel-size", type=_float_list, metavar="Z,Y,X",
                   help="voxel size of the input in um (z,y,x or y,x); default: from the file's metadata "
                        "(ImageJ/OME-TIFF, OME-Zarr, FITS WCS in arcsec)")
    p.add_argument("--psf-voxel-size", type=_float_list, metavar="Z,Y,X",
                   help="voxel size of the --psf file in um; default: from its metadata. A PSF with another "
                        "voxel size than the input is resampled to it (flux kept)")
    p.add_argument("--psf-center", default="none", choices=("none", "peak", "centroid"),
                   help="re-centre the PSF file on its peak or centre of mass (default none: centre at N/2)")
    p.add_argument("--psf-background", help="subtract from the PSF file: 'auto' (median of its border) or a number")
    p.add_argument("--psf-crop-energy", type=float, metavar="FRACTION",
                   help="crop the PSF file to the centred box that keeps this fraction of its flux, e.g. 0.999 "
                   "(smaller halos for chunks); default: no crop beyond the image size")
    p.add_argument("--psf-model", choices=sorted(catalog.PSF_MODELS),
                   help="generate the PSF; its parameters as options, e.g. --psf-model motion --length 15 --angle 30")
    models = p.add_argument_group("generated PSF parameters (see deblur_ops.apps.catalog.PSF_MODELS for defaults)")
    for name, (kind, users, description) in _PSF_OPTIONS.items():
        models.add_argument("--" + name.replace("_", "-"), dest=name, type=kind,
                            help=f"{description} (for {', '.join(users)})")
    p.add_argument("--axis", type=_int_list, help="axes processed independently, e.g. 0 or 0,1 "
                   "(default: all axes in front of the PSF's)")
    p.add_argument("--chunks", type=_int_list, help="chunk size per axis, -1 for a whole axis, e.g. 1,512,512; "
                   "processes chunk-wise with a halo through dask (default for Zarr: its own chunks)")
    p.add_argument("--halo", type=_int_list, help="halo per PSF axis for chunks (default 3 PSF radii)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="dask.distributed scheduler, e.g. tcp://host:8786")
    p.add_argument("--output-dtype", default="same", choices=("same", "float32"),
                   help="same: the input's dtype (integers rounded and clipped); float32: as computed")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output that deblur run did not write (its own are replaced anyway)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted Zarr output of the same command (chunks already written are kept)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)

    p = sub.add_parser("train", help="train a model on synthetic blurred images (deblur train --list)")
    p.add_argument("model", nargs="?", help="recipe name, e.g. irc, motion, blind (see --list)")
    p.add_argument("--list", action="store_true", help="list the trainable models")
    p.add_argument("--steps", type=int, help="optimisation steps (default: the recipe's)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--patch", type=int, help="training patch side in pixels")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="weight file to write (default <model>.pt)")
    p.add_argument("--install", action="store_true",
                   help="write the weights into the package, where load_pretrained() finds them")
    p.add_argument("--checkpoint", help="checkpoint file, written at every validation")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--images", help="folder of training images (default: the built-in offline images)")
    p.add_argument("--validate-every", type=int, help="steps between validations")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--set", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                   help="recipe option, e.g. --set width=16 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("models", help="list the shipped trained models and how each was trained")
    p.add_argument("--verbose", action="store_true", help="print the whole training record of each")
    p.set_defaults(func=_models)

    from . import evaluate

    p = sub.add_parser("evaluate", help="score restoration methods (PSNR, SSIM, runtime) on blurred test images")
    p.add_argument("--methods", nargs="+", default=list(evaluate.DEFAULT_METHODS),
                   help=f"method names, optionally name:key=value,... (from {evaluate.available_methods()})")
    p.add_argument("--kernels", nargs="+", default=list(evaluate.DEFAULT_KERNELS),
                   help="PSF specs: motion:LEN:ANGLE, gaussian:SIGMA, moffat:FWHM:BETA, airy:WL:NA:PIXEL, "
                        "shake:SEED[:LEN], field:SEED (random camera-motion field, spatially varying) "
                        "(default: 8 linear motions, as paper 004 Table 1)")
    p.add_argument("--images", nargs="+", default=list(evaluate.DEFAULT_IMAGES), choices=SAMPLES)
    p.add_argument("--noise", nargs="+", type=float, default=list(evaluate.DEFAULT_NOISE),
                   help="Gaussian noise sigma(s) on [0,1] images (default 0.01)")
    p.add_argument("--size", type=int, default=256, help="central crop size (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per call, fastest kept (default 3)")
    p.add_argument("--device", default="cpu", help="device for deblur_ops methods: cpu, cuda, auto (default cpu)")
    p.add_argument("--nonuniform", action="store_true",
                   help="paper 004 Table 3 protocol: nu_cg and irc on random camera-motion fields, "
                        "128x128 (options given explicitly still win)")
    p.add_argument("--motion", action="store_true",
                   help="score Motion-Net's motion estimates (paper 004 Table 2 metric) on the --nonuniform protocol")
    p.add_argument("--forward", choices=evaluate.FIELD_FORWARD_MODELS, default="exact",
                   help="how motion-field observations are made: exact (each pixel's own line, default) or "
                        "bank (the solvers' 511-filter model: the old, inverse-crime protocol)")
    p.add_argument("--field-bank", choices=evaluate.FIELD_BANKS, default="paper",
                   help="the motion bank nu_cg and irc blur through on motion fields: paper (004's 511 filters, "
                        "default) or fine (1 px / 2 degree steps, model error well below the noise); the model "
                        "error line reports both")
    p.add_argument("--blind", action="store_true",
                   help="blind protocol: held-out images, Boracchi-Foi camera-shake kernels 11-35 px, noise 1 %%; "
                        "blind methods vs irc-net with the true kernel, Levin's error ratio")
    p.add_argument("--sides", type=_int_list, help="kernel sides in px for --blind (default 11,15,...,35)")
    p.add_argument("--span-kernels", action="store_true",
                   help="--blind with shake kernels scaled to span their side (as recorded camera shake does); "
                        "by default many are compact (3-23 px across)")
    p.add_argument("--protocol", choices=sorted(evaluate.PROTOCOL_METHODS),
                   help="real-data protocol: microscopy (3D Gibson-Lanni, anisotropic voxels, Poisson, camera "
                        "offset) or astronomy (varying Moffat seeing, sky, Poisson); --methods as NAME[:psf=...]")
    p.add_argument("--shape", type=_int_list, help="scene shape for --protocol (default 16,64,64 / 96,96)")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.add_argument("--save", metavar="DIR", help="write <date>_evaluate.json/.md into DIR (e.g. benchmarks/results)")
    p.set_defaults(func=_evaluate)
    return parser


# Options whose value is a comma-separated list of integers that may start with "-1" (a whole axis).
_INTEGER_LIST_OPTIONS = ("--chunks", "--halo", "--axis")


def _join_negative_lists(argv: list[str]) -> list[str]:
    """``--chunks -1,64,64`` as ``--chunks=-1,64,64``: argparse takes a value starting with "-" that
    is not a plain negative number for an option and reports "expected one argument"."""
    joined, i = [], 0
    while i < len(argv):
        if argv[i] in _INTEGER_LIST_OPTIONS and i + 1 < len(argv) and re.fullmatch(r"-\d+(,-?\d+)*", argv[i + 1]):
            joined.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    return joined


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(_join_negative_lists(argv))
    try:
        return args.func(args)
    except (ValueError, OSError, MemoryError) as exc:
        # Bad arguments and unreadable files are the user's to fix: one line, not a traceback.
        print(f"deblur {args.command}: error: {exc}".splitlines()[0], file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
