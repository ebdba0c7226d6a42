#!/usr/bin/env bash
# Everything the first GPU session should do, as one command that ends within ~8 minutes on a bare
# H100/H200 machine (Python 3.12, a CUDA torch, nvcc, ninja, pytest; no network, so nothing is
# installed: the machine's own torch and packages are used).
#
#   scripts/gpu_check.sh            preflight, build, CUDA tests, memcheck, benchmarks
#   scripts/gpu_check.sh --dry-run  no GPU needed: list the stages and rehearse what runs on a CPU
#                                   (collect the CUDA tests, run the kernel exercise and every bench
#                                   case on the CPU at tiny sizes)
#
# Stages (time limit in seconds; all of them together never exceed GPU_CHECK_TOTAL_S, default 470;
# a dry run triples both):
#   preflight   8+30 nvidia-smi lists a GPU, torch can use it; else exit 2 at once with one line
#   build     180   the CUDA extension in place (DEBLUR_OPS_CUDA=1, this GPU's arch, MAX_JOBS=16)
#   kernels    30   every op has a CUDA kernel registered
#   tests     150   pytest -m cuda: parity with CPU and reference, gradcheck, opcheck, torch.compile
#   memcheck  120   compute-sanitizer --tool memcheck on scripts/gpu_check_tools.py exercise
#   bench:OP   40-120 each: `deblur bench --device cuda --ops OP` at the GPU target sizes (nu_conv
#                   2048^2, wiener_stack 2048^2, learnable_shrink 8x64x256x256, Richardson-Lucy
#                   256^3 x 10 if the bench has it, irc_net 375x500, then the rest), then merged
#                   into benchmarks/results/<date>_<gpu>.md/.json
# A failed stage does not stop the later ones; the summary lists each stage with its time, and the
# exit status is 1 if any stage failed (2: no GPU). GPU_CHECK_SKIP="tests memcheck" (any of tests,
# memcheck, bench) leaves stages out, for a second run on what time is left. Logs go to $OUT when
# it is set (the device tool brings that folder back), else to build/gpu_check/; the bench results
# are copied there too.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: scripts/gpu_check.sh [--dry-run]" >&2; exit 64 ;;
esac

PY=${PYTHON:-python3}
# A dry run rehearses on whatever CPU machine is at hand, often a loaded one: three times the limits.
SCALE=$((DRY ? 3 : 1))
TOTAL_S=${GPU_CHECK_TOTAL_S:-$((470 * SCALE))}
WORK=${GPU_CHECK_WORK:-build/gpu_check}
LOGDIR=${OUT:-$WORK}
rm -rf "$WORK"
mkdir -p "$WORK" "$LOGDIR"
LOG=$LOGDIR/gpu_check.log
START=$SECONDS
export PYTHONUNBUFFERED=1

STAGES=()
RESULTS=()
FAILED=0

record() {  # name status seconds
  STAGES+=("$1")
  RESULTS+=("$(printf '%-24s %-34s %4d s' "$1" "$2" "$3")")
  case $2 in FAIL*) FAILED=1 ;; esac
}

# run_stage NAME LIMIT_S COMMAND...: run under `timeout`, cut to the time left of TOTAL_S.
run_stage() {
  local name=$1 cap=$2 left limit t0 rc status
  shift 2
  cap=$((cap * SCALE))
  left=$((TOTAL_S - (SECONDS - START)))
  limit=$((cap < left ? cap : left))
  if ((limit < 5)); then
    echo "=== stage $name: skipped, out of time (${left}s left of ${TOTAL_S}s) ==="
    record "$name" "FAIL (no time left)" 0
    return 1
  fi
  echo "=== [$(date -u +%H:%M:%S)] stage $name (limit ${limit}s): $* ==="
  t0=$SECONDS
  timeout -k 10 "$limit" "$@"
  rc=$?
  case $rc in
    0) status=PASS ;;
    124 | 137) status="FAIL (timeout after ${limit}s)" ;;
    *) status="FAIL (exit $rc)" ;;
  esac
  echo "=== stage $name: $status in $((SECONDS - t0))s ==="
  record "$name" "$status" $((SECONDS - t0))
  return $rc
}

skipped() {  # stage: true (and say so) if GPU_CHECK_SKIP names it
  case " ${GPU_CHECK_SKIP:-} " in
    *" $1 "*) echo "=== stage $1: left out (GPU_CHECK_SKIP) ===" && return 0 ;;
  esac
  return 1
}

summary() {
  echo
  echo "=== gpu_check summary ($((SECONDS - START))s of ${TOTAL_S}s$([ $DRY = 1 ] && echo ', dry run')) ==="
  printf '%s\n' "${RESULTS[@]}"
  echo "log: $LOG"
}

main() {
# --- preflight: fail fast, in seconds, without a GPU --------------------------------------------
t0=$SECONDS
why=""
if ! command -v nvidia-smi >/dev/null 2>&1; then
  why="nvidia-smi not found (no NVIDIA driver on this machine)"
elif ! gpus=$(timeout 8 nvidia-smi -L 2>&1) || [ -z "$gpus" ]; then
  why="nvidia-smi lists no GPU: ${gpus:-nothing}"
else
  echo "$gpus"
  info=$(timeout 30 "$PY" -c '
import torch
assert torch.version.cuda, f"torch {torch.__version__} is a CPU-only build"
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
major, minor = torch.cuda.get_device_capability()
print(f"{major}.{minor}", torch.cuda.get_device_name(), torch.__version__, "CUDA", torch.version.cuda)
' 2>&1) || why="torch cannot use the GPU: $(echo "$info" | tail -n 1)"
fi
if [ -n "$why" ]; then
  if [ $DRY = 0 ]; then
    echo "gpu_check: FAIL: no CUDA GPU: $why"
    return 2
  fi
  record preflight "no GPU (dry run)" $((SECONDS - t0))
  echo "preflight (dry run, continuing): no CUDA GPU: $why"
else
  record preflight PASS $((SECONDS - t0))
  echo "GPU: $info"
fi
ARCH=${TORCH_CUDA_ARCH_LIST:-$(echo "${info:-9.0}" | cut -d' ' -f1)}
if [ -z "${CUDA_HOME:-}" ]; then
  # The toolkit folder first: an nvcc on PATH can be a wrapper script outside it.
  for c in /usr/local/cuda /usr/local/cuda-13.0 "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /)")")")"; do
    if [ -x "$c/bin/nvcc" ]; then CUDA_HOME=$c && break; fi
  done
fi
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
SANITIZER=$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")
echo "python: $("$PY" -c 'import sys; print(sys.version.split()[0])'), CUDA_HOME=$CUDA_HOME," \
  "nvcc: $(nvcc --version 2>/dev/null | tail -n 1 || echo missing), ninja: $(ninja --version 2>/dev/null || echo missing)," \
  "arch list: $ARCH"
# The CUDA tests import these; hypothesis and scipy are at the top of the op test modules.
"$PY" -c '
import importlib.util
missing = [m for m in ("numpy", "scipy", "hypothesis", "skimage", "xdist") if importlib.util.find_spec(m) is None]
print("python packages missing:", ", ".join(missing) if missing else "none")'

BUILD_ENV=(env DEBLUR_OPS_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="${MAX_JOBS:-16}" CUDA_HOME="$CUDA_HOME")
BUILD=("${BUILD_ENV[@]}" "$PY" setup.py -q build_ext --inplace)
KERNELS=("$PY" -c '
import torch
from deblur_ops import _extension
assert _extension.LOADED, f"deblur_ops._C did not load: {_extension.LOAD_ERROR}"
missing = [op for op in _extension.OPS if "cuda" not in _extension.KERNELS[op]]
assert not missing, f"ops without a CUDA kernel: {missing}"
print("CUDA kernels registered for", ", ".join(_extension.OPS))')
XDIST=()
if "$PY" -c 'import xdist' 2>/dev/null; then XDIST=(-n 8); fi
# Each xdist worker's inductor would start a pool of 16 compile processes; the compiled graphs are tiny.
TESTS=(env TORCHINDUCTOR_COMPILE_THREADS=2 "$PY" -m pytest -m cuda -v -rfEs -p no:cacheprovider --continue-on-collection-errors
  --junitxml "$LOGDIR/cuda_tests.xml" "${XDIST[@]}" tests)
# No caching allocator under memcheck: each tensor is its own allocation, so a read past its end
# is an error rather than a read of a neighbour inside one cached block.
MEMCHECK=(env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck --error-exitcode 1
  "$PY" scripts/gpu_check_tools.py exercise --device cuda)

# skimage's Wiener runs on the CPU whatever --device is: 15 filters at 2048^2 would take minutes.
GPU_BENCH_RUN=(--warmup 2 --repeats 5 --no-cpu-peers)

# nu_conv's reference is a loop over 961 taps x K (60 s for one 64^2 call on a loaded 2-core CPU):
# its 28 timed calls at 2048^2 need the most time.
bench_cap() {
  case $1 in
    nu_conv) echo 120 ;;
    wiener_stack) echo 75 ;;
    learnable_shrink) echo 40 ;;
    *) echo 50 ;;
  esac
}

# --- stages ---------------------------------------------------------------------------------------
if [ $DRY = 1 ]; then
  echo "=== dry run: the GPU run would execute ==="
  echo "build:    ${BUILD[*]}"
  echo "tests:    ${TESTS[*]}"
  echo "memcheck: ${MEMCHECK[*]}"
  echo "bench (GPU target sizes):"
  "$PY" scripts/gpu_check_tools.py bench-cases | while read -r op args; do
    echo "  [$(bench_cap "$op")s] $PY -m deblur_ops bench --device cuda --ops $op $args ${GPU_BENCH_RUN[*]} --json $WORK/bench_$op.json"
  done
  for tool in nvcc ninja; do command -v $tool >/dev/null || echo "note: $tool not found here"; done
  run_stage tests-collect 120 "$PY" -m pytest -m cuda --collect-only -q -p no:cacheprovider tests
  run_stage exercise-cpu 120 "$PY" scripts/gpu_check_tools.py exercise --device cpu
  DEVICE=cpu
  CASES_ARGS=(--tiny)
  BENCH_RUN=(--warmup 0 --repeats 1 --no-cpu-peers)
  RESULTS_DIR=$WORK/results
else
  # A stale extension (a CPU build carried along, say) must not stand in for one that fails to build.
  rm -f deblur_ops/_C*.so
  if run_stage build 180 "${BUILD[@]}"; then
    run_stage kernels 30 "${KERNELS[@]}"
  else
    record kernels "FAIL (not built)" 0
  fi
  skipped tests || run_stage tests 150 "${TESTS[@]}"
  if skipped memcheck; then
    :
  elif [ -x "$SANITIZER" ]; then
    run_stage memcheck 120 "${MEMCHECK[@]}"
  else
    echo "compute-sanitizer not found (looked on PATH and in $CUDA_HOME/bin)"
    record memcheck "FAIL (no compute-sanitizer)" 0
  fi
  DEVICE=cuda
  CASES_ARGS=()
  BENCH_RUN=("${GPU_BENCH_RUN[@]}")
  RESULTS_DIR=benchmarks/results
fi

skipped bench && { summary; return $FAILED; }
REPORTS=()
CASES=$("$PY" scripts/gpu_check_tools.py bench-cases "${CASES_ARGS[@]}") || record bench-cases "FAIL" 0
while read -r op args; do
  [ -n "$op" ] || continue
  # shellcheck disable=SC2086  # $args holds the case's flags, split on purpose
  run_stage "bench:$op" "$(bench_cap "$op")" "$PY" -m deblur_ops bench --device "$DEVICE" --ops "$op" $args \
    "${BENCH_RUN[@]}" --json "$WORK/bench_$op.json"
  REPORTS+=("$WORK/bench_$op.json")
done <<<"$CASES"
run_stage bench-merge 30 "$PY" scripts/gpu_check_tools.py bench-merge --paths-to "$WORK/merged.txt" \
  "$RESULTS_DIR" "${REPORTS[@]}"
if [ -s "$WORK/merged.txt" ]; then
  while read -r path; do
    [ "$LOGDIR" = "$WORK" ] || cp "$path" "$LOGDIR/"
  done <"$WORK/merged.txt"
fi

summary
return $FAILED
}

# Through a pipe rather than `exec > >(tee)`: the log is complete when the script exits. One line,
# read whole before it runs, so that editing this file during a run cannot change what follows.
main 2>&1 | tee "$LOG"; exit "${PIPESTATUS[0]}"
