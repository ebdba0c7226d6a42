#!/usr/bin/env bash
# Set up deblur-ops in the current Python environment:
#   torch (CPU build 2.13.0 unless a torch is already installed: users keep their own torch),
#   the package in editable mode with its C++ extension built against that torch,
#   and with --test the test dependencies, the napari plugin's (napari, PyQt6, pytest-qt,
#   pytest-xvfb) and, as root with apt, the X server and libraries napari's tests need.
# The build uses --no-build-isolation so pip never downloads another (multi-GB CUDA) torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=""
if [ "${1:-}" = "--test" ]; then extras="[test,test-napari]"; fi

pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  pip_install "torch==${TORCH_VERSION:-2.13.0}"
fi
pip_install "setuptools>=77" wheel ninja
# napari's tests draw real image layers (vispy needs an X server; Qt's offscreen platform fails
# there): Xvfb, started by pytest-xvfb, plus the xcb/GL libraries Qt 6 loads.
if [ -n "$extras" ] && ! command -v Xvfb >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
   && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq xvfb xauth libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 \
    libgl1 libegl1 libxkbcommon-x11-0 libdbus-1-3 >/dev/null
fi
pip_install --no-build-isolation -e ".${extras}"
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
"$PY" -c "import deblur_ops; print('deblur-ops ready:', deblur_ops.backend())"
