"""Python steps of scripts/gpu_check.sh (run from the repository root).

  exercise [--device D]     call every CUDA kernel (forward and backward of each op, every mode,
                            padding, dtype and code path) on small inputs and compare with the CPU;
                            run under compute-sanitizer it is the memcheck stage
  bench-cases [--tiny]      one line per op of deblur_ops.apps.bench.OPS: the op, then the `deblur bench`
                            flags for its GPU target size (--tiny: small sizes for a CPU rehearsal)
  bench-merge DIR JSON...   merge per-op `deblur bench --json` reports into DIR/<date>_<device>.md/json
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

# The repository's deblur_ops (with the extension built in place), not an installed copy: the GPU
# machine has none, and here the editable install may point at another checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Richardson-Lucy: 256^3 x 10 iterations on the GPU. Its bench flags are matched by name because
# they were being added to deblur_ops.apps.bench while this script was written.
RL_TARGET = {"shape": "256,256,256", "size": "256", "iter": "10"}
RL_TINY = {"shape": "16,16,16", "size": "16", "iter": "2"}
TARGET = {"wiener_stack": ["--size", "2048"], "learnable_shrink": ["--shrink-shape", "8,64,256,256"],
          "nu_conv": ["--nu-conv-size", "2048"], "irc_net": ["--irc-shape", "375,500"],
          "irc": ["--irc-shape", "375,500"]}
TINY = {"wiener_stack": ["--size", "64"], "learnable_shrink": ["--shrink-shape", "1,2,16,16"],
        "nu_conv": ["--nu-conv-size", "64"], "irc_net": ["--irc-shape", "48,64"],
        "irc": ["--irc-shape", "48,64"]}


def _compare(got, want, what: str, dtype) -> None:
    # float32: the bank and knot gradients are sums of ~10^4 products, reduced in another order on
    # the GPU, so their rounding reaches 1e-4 in absolute terms.
    rtol, atol = (1e-4, 1e-3) if dtype == torch.float32 else (1e-9, 1e-9)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def exercise(device: str) -> int:
    """Each kernel on ``device`` against the CPU kernel (or the CPU reference without one)."""
    from deblur_ops import reference as ref

    op = torch.ops.deblur_ops
    gen = torch.Generator().manual_seed(0)
    calls = 0

    def rand(*shape, dtype):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    def run(name, fn, inputs, dtype):
        nonlocal calls
        got = fn(*[t.to(device) if isinstance(t, torch.Tensor) else t for t in inputs])
        want = fn(*inputs)
        _compare(got if isinstance(got, (tuple, list)) else [got],
                 want if isinstance(want, (tuple, list)) else [want], name, dtype)
        calls += 1

    for dtype in (torch.float32, torch.float64):
        # nu_conv: both modes, every padding, K = 1 and 4, shared and per-batch fields, a filter
        # larger than the image, int32 and int64 idx.
        for (mode, padding), ((b, c, h, w, k, f, kh, kw, bf), idx_dtype) in itertools.product(
                itertools.product(ref.NU_CONV_MODES, ref.NU_CONV_PADDINGS),
                [((2, 3, 37, 45, 1, 7, 9, 13, 1), torch.int64), ((2, 2, 19, 23, 4, 5, 7, 5, 2), torch.int64),
                 ((1, 1, 7, 5, 4, 3, 9, 11, 1), torch.int32)]):
            x, bank, weights = rand(b, c, h, w, dtype=dtype), rand(f, kh, kw, dtype=dtype), rand(bf, k, h, w, dtype=dtype)
            idx = torch.randint(0, f, (bf, k, h, w), generator=gen, dtype=idx_dtype)
            label = f"nu_conv {mode}/{padding} K={k} {dtype}"
            run(label, op.nu_conv, (x, bank, idx, weights, mode, padding), dtype)
            run(label + " backward", op.nu_conv_backward,
                (rand(b, c, h, w, dtype=dtype), x, bank, idx, weights, mode, padding, [True, True, True]), dtype)
        # learnable_shrink: the shared-memory table (11 knots) and the global-memory one (4000).
        for n in (11, 4000):
            x, values = rand(3, 4, 33, 65, dtype=dtype) * 1.5, rand(4, n, dtype=dtype)
            run(f"learnable_shrink n={n} {dtype}", op.learnable_shrink, (x, values, -1.0, 1.0), dtype)
            run(f"learnable_shrink_backward n={n} {dtype}", op.learnable_shrink_backward,
                (rand(*x.shape, dtype=dtype), x, values, -1.0, 1.0), dtype)
        # wiener_stack: 2D and 3D, one PSF and one per batch item, both regularisers.
        for regularizer, (shape, psf_shape) in itertools.product(
                ("identity", "laplacian"), [((2, 3, 65, 48), (2, 7, 5)), ((1, 2, 21, 18), (1, 5, 3)),
                                            ((2, 2, 9, 20, 17), (2, 3, 7, 5)), ((1, 1, 8, 12, 10), (1, 3, 5, 3))]):
            image = rand(*shape, dtype=dtype)
            psf = rand(*psf_shape, dtype=dtype).abs() + 0.05
            psf = psf / psf.sum(dim=tuple(range(1, psf.dim())), keepdim=True)
            snr = torch.tensor([9.0, 25.0, 60.0], dtype=dtype)
            label = f"wiener_stack {len(shape) - 2}D {regularizer} {dtype}"
            run(label, op.wiener_stack, (image, psf, snr, regularizer), dtype)
            run(label + " backward", op.wiener_stack_backward,
                (rand(shape[0], 3, *shape[1:], dtype=dtype), psf, snr, regularizer), dtype)
    if device != "cpu":
        torch.cuda.synchronize()
    print(f"exercise: {calls} kernel calls on {device} agree with the CPU")
    return 0


def _bench_options() -> list:
    from deblur_ops.apps import cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["bench"]._actions


def bench_cases(tiny: bool) -> int:
    from deblur_ops.apps import bench

    sizes = TINY if tiny else TARGET
    # The GPU targets first, so that a run cut by its time limit loses the others.
    first = [op for op in ("nu_conv", "wiener_stack", "learnable_shrink") if op in bench.OPS]
    first += [op for op in bench.OPS if "richardson" in op or op == "rl"]
    first += [op for op in ("irc_net",) if op in bench.OPS]
    for name in first + [op for op in bench.OPS if op not in first]:
        if name in sizes:
            print(name, *sizes[name])
        elif "richardson" in name or name in ("rl", "richardson_lucy"):
            flags = []
            for action in _bench_options():
                text = f"{action.dest} {action.help or ''}".lower()
                if not action.option_strings or not ("rl" in action.dest.split("_") or "richardson" in text):
                    continue
                for key, value in (RL_TINY if tiny else RL_TARGET).items():
                    if key in action.dest:
                        flags += [action.option_strings[-1], value]
                        break
            if not flags:
                print(f"bench-cases: no size flags found for {name}; it runs at its default size", file=sys.stderr)
            print(name, *flags)
        else:
            print(f"bench-cases: {name} has no GPU target size here; it runs at its default size", file=sys.stderr)
            print(name)
    return 0


def bench_merge(directory: str, paths: list[str], paths_to: str | None) -> int:
    from deblur_ops.apps import bench

    reports = [json.loads(Path(p).read_text()) for p in paths if Path(p).is_file()]
    if not reports:
        print("bench-merge: no per-op report to merge", file=sys.stderr)
        return 1
    merged = dict(reports[0], rows=[row for r in reports for row in r["rows"]])
    merged["matmul_gflops"] = max(r["matmul_gflops"] for r in reports)
    measured = {row["op"] for row in merged["rows"]}
    missing = [op for op in bench.OPS if op not in measured]
    saved = bench.save(merged, directory)
    for path in saved:
        print(f"bench results: {path}")
        if missing and path.suffix == ".md":
            with path.open("a") as f:
                f.write(f"\nNot measured (failed or out of time, see the gpu_check log): {', '.join(missing)}\n")
    if paths_to:
        Path(paths_to).write_text("".join(f"{p}\n" for p in saved))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("exercise")
    p.add_argument("--device", default="cuda")
    p = sub.add_parser("bench-cases")
    p.add_argument("--tiny", action="store_true")
    p = sub.add_parser("bench-merge")
    p.add_argument("--paths-to", help="also write the saved paths, one a line, to this file")
    p.add_argument("directory")
    p.add_argument("reports", nargs="*")
    args = parser.parse_args(argv)
    if args.command == "exercise":
        return exercise(args.device)
    if args.command == "bench-cases":
        return bench_cases(args.tiny)
    return bench_merge(args.directory, args.reports, args.paths_to)


if __name__ == "__main__":
    sys.exit(main())
