"""Build deblur_ops._C from csrc/.

CppExtension by default; CUDAExtension when a CUDA toolkit and a CUDA build of torch are both
present (or when DEBLUR_OPS_CUDA=1 demands it). DEBLUR_OPS_CUDA=0 forces the CPU-only build.
Install with ``pip install --no-build-isolation -e .`` so that the torch already installed is used.
"""
import glob
import os

import torch
from setuptools import setup
from torch.utils import cpp_extension

HERE = os.path.dirname(os.path.abspath(__file__))


def _want_cuda() -> bool:
    flag = os.environ.get("DEBLUR_OPS_CUDA", "auto").lower()
    available = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if flag in ("0", "false", "no"):
        return False
    if flag in ("1", "true", "yes") and not available:
        raise RuntimeError(
            "DEBLUR_OPS_CUDA=1 but no CUDA build is possible: torch.version.cuda="
            f"{torch.version.cuda!r}, CUDA_HOME={cpp_extension.CUDA_HOME!r}. Install a CUDA build "
            "of torch and set CUDA_HOME to the toolkit (e.g. /usr/local/cuda-13.0)."
        )
    return available


def _sources(pattern: str) -> list:
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


def _extension():
    use_cuda = _want_cuda()
    sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp")
    # -fopenmp is what makes at::parallel_for parallel: its OpenMP body is inline in the ATen headers
    # and compiles to a serial loop without it. The extension then needs libgomp.so.1, which the
    # dynamic linker resolves to the copy torch has already loaded (same soname), so both share
    # one runtime and at::get_thread_num() is valid inside our parallel regions.
    cxx = ["-O3", "-g0", "-fopenmp", "-DPy_LIMITED_API=0x030A0000"]
    extra = {"cxx": cxx}
    link = ["-fopenmp"]
    if use_cuda:
        sources += _sources("csrc/cuda/*.cpp") + _sources("csrc/cuda/*.cu")
        extra["nvcc"] = ["-O3", "-lineinfo"]
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        return cpp_extension.CUDAExtension(
            "deblur_ops._C", sources, extra_compile_args=extra, extra_link_args=link,
            py_limited_api=True,
        )
    return cpp_extension.CppExtension(
        "deblur_ops._C", sources, extra_compile_args=extra, extra_link_args=link, py_limited_api=True
    )


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
