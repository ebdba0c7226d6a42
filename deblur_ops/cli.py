"""The `deblur` command: demo, bench, doctor, evaluate."""
from __future__ import annotations

import argparse
import json
import sys


def _doctor(args) -> int:
    import torch

    from . import __version__, _extension

    cuda = torch.cuda.is_available()
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    print(f"deblur-ops {__version__}")
    print(f"torch      {torch.__version__} ({build}), {torch.get_num_threads()} CPU threads")
    if _extension.LOADED:
        from . import _C

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

    result = run_demo(args.image, length=args.length, angle=args.angle, noise_sigma=args.noise,
                      size=args.size, seed=args.seed, output=args.output, device=args.device)
    print(result.summary())
    return 0


def _bench(args) -> int:
    import torch

    from . import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    report = bench.run(args.ops, device=args.device, size=args.size,
                       shrink_shape=args.shrink_shape, warmup=args.warmup, repeats=args.repeats)
    print(bench.markdown(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    if args.save:
        for path in bench.save(report, args.save):
            print(f"wrote {path}")
    return 0


def _evaluate(args) -> int:
    from . import evaluate

    if args.nonuniform:  # paper 004 Table 3 set-up wherever the user kept the Table 1 defaults
        for key, uniform, nonuniform in (
                ("methods", evaluate.DEFAULT_METHODS, evaluate.NONUNIFORM_METHODS),
                ("kernels", evaluate.DEFAULT_KERNELS, evaluate.NONUNIFORM_KERNELS),
                ("images", evaluate.DEFAULT_IMAGES, evaluate.NONUNIFORM_IMAGES),
                ("size", 256, evaluate.NONUNIFORM_SIZE)):
            if getattr(args, key) == (list(uniform) if isinstance(uniform, tuple) else uniform):
                setattr(args, key, list(nonuniform) if isinstance(nonuniform, tuple) else nonuniform)
    report = evaluate.evaluate(args.methods, args.kernels, args.images, args.noise, size=args.size,
                               seed=args.seed, repeats=args.repeats, device=args.device,
                               progress=lambda done, total: print(f"  {done}/{total} images", file=sys.stderr))
    print(evaluate.markdown(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    if args.save:
        for path in evaluate.save(report, args.save):
            print(f"wrote {path}")
    return 0


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
    from .data import SAMPLES

    parser = argparse.ArgumentParser(prog="deblur", description="Learned and classical image deconvolution.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="show torch, extension, CUDA and the backend of each op")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("demo", help="blur a built-in image with a known motion PSF, restore it, report PSNR")
    p.add_argument("--image", default="astronaut", choices=SAMPLES)
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
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--nonuniform", action="store_true",
                   help="paper 004 Table 3 protocol: nu_cg and irc on random camera-motion fields, "
                        "128x128 (options given explicitly still win)")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.add_argument("--save", metavar="DIR", help="write <date>_<device>.json/.md into DIR "
                   "(e.g. benchmarks/results)")
    p.set_defaults(func=_bench)

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
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.add_argument("--save", metavar="DIR", help="write <date>_evaluate.json/.md into DIR (e.g. benchmarks/results)")
    p.set_defaults(func=_evaluate)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"deblur {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
