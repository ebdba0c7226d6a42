#!/usr/bin/env bash
# Compile and link the CUDA variant of deblur_ops._C against a CUDA build of torch (in its own venv,
# so the CPU torch used by the tests is untouched), then check that every op has a CUDA kernel
# registered. No GPU is needed: kernels are compiled, not launched.
#   VENV      where the CUDA torch venv lives     (default: .venv-cuda)
#   CUDA_HOME the CUDA toolkit                     (default: /usr/local/cuda-13.0 or /usr/local/cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-cuda}
TORCH_CUDA_VERSION=${TORCH_CUDA_VERSION:-2.14.1}
if [ -z "${CUDA_HOME:-}" ]; then
  for c in /usr/local/cuda-13.0 /usr/local/cuda; do [ -x "$c/bin/nvcc" ] && CUDA_HOME=$c && break; done
fi
[ -x "${CUDA_HOME:-}/bin/nvcc" ] || { echo "check_cuda_build: no nvcc found; set CUDA_HOME" >&2; exit 1; }
export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"

if ! "$VENV/bin/python" -c "import torch; assert torch.version.cuda" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "torch==$TORCH_CUDA_VERSION" numpy "setuptools>=77" wheel ninja
fi

# Build a copy of the tracked tree so the CPU build's in-place _C stays as it is.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -co --exclude-standard | tar cf - -T - | tar xf - -C "$work"
(cd "$work" && DEBLUR_OPS_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-2}" \
  "$OLDPWD/$VENV/bin/python" setup.py -q build_ext --inplace)

(cd "$work" && "$OLDPWD/$VENV/bin/python" - <<'PY'
import torch
from deblur_ops import _C  # noqa: F401
from deblur_ops._extension import OPS
missing = [op for op in OPS
           if not torch._C._dispatch_has_kernel_for_dispatch_key(f"deblur_ops::{op}", "CUDA")]
assert not missing, f"ops without a CUDA kernel: {missing}"
print(f"CUDA build OK: torch {torch.__version__}, CUDA kernels registered for {', '.join(OPS)}")
PY
)
