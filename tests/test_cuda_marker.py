"""CUDA test hygiene: `pytest -m cuda` (what scripts/gpu_check.sh runs on a GPU) must select every
test that touches a CUDA device, those tests must test the compiled kernels, not the fallback, and
scripts/gpu_check.sh must say at once when there is no GPU."""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deblur_ops import _extension

from .conftest import CUDA, requires_cuda

TESTS = Path(__file__).resolve().parent
# .cuda(), device="cuda" (also as a defaulted argument), .to("cuda"), torch.device("cuda")
USES_DEVICE = re.compile(r"""\.cuda\(|device\s*=\s*["']cuda|\.to\(\s*["']cuda|torch\.device\(\s*["']cuda""")


def tests_using_the_device() -> set[tuple[str, str]]:
    """(file name, test function name) of every test whose name says cuda or whose code uses it."""
    found = set()
    for path in sorted(TESTS.glob("test_*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                code = ast.get_source_segment(source, node)
                if "cuda" in node.name.lower() or USES_DEVICE.search(code):
                    found.add((path.name, node.name))
    return found


def test_every_gpu_test_is_selected_by_the_marker():
    using = tests_using_the_device()
    files = sorted({name for name, _ in using})
    # A pattern that silently stopped matching would make this test pass on nothing.
    assert {"test_nu_conv.py", "test_learnable_shrink.py", "test_wiener_stack.py"} <= set(files), files
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda", "-p", "no:cacheprovider",
         *(f"tests/{name}" for name in files)],
        cwd=TESTS.parent, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    selected = set()
    for line in result.stdout.splitlines():
        if "::" in line:
            node = line.split("[", 1)[0].split("::")
            selected.add((Path(node[0]).name, node[-1]))
    missing = sorted(using - selected)
    assert not missing, (f"tests that use CUDA but lack the cuda marker (decorate them with "
                         f"tests.conftest.requires_cuda): {missing}")


def test_marked_tests_are_skipped_exactly_when_there_is_no_device(request):
    marked = [item for item in request.session.items if item.get_closest_marker("cuda")]
    for item in marked:
        reasons = [m.kwargs.get("reason") for m in item.iter_markers("skip")]
        assert ("needs a CUDA device" in reasons) == (not CUDA), (item.nodeid, reasons)


@requires_cuda
def test_every_op_has_a_cuda_kernel():
    # Without a CUDA kernel the ops fall back to the pure-PyTorch reference on CUDA tensors and the
    # parity tests would compare the reference with itself.
    assert _extension.backend(torch.device("cuda")) == {op: "extension" for op in _extension.OPS}



@pytest.mark.skipif(CUDA, reason="checks the failure without a GPU")
def test_gpu_check_script_fails_at_once_without_a_gpu(tmp_path):
    script = TESTS.parent / "scripts" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    env = dict(os.environ, OUT=str(tmp_path / "out"), GPU_CHECK_WORK=str(tmp_path / "work"))
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("gpu_check: FAIL: no CUDA GPU: "), result.stdout
    assert (tmp_path / "out" / "gpu_check.log").read_text() == result.stdout
