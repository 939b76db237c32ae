#!/usr/bin/env bash
# The prepared GPU check (issue 13): on a machine with a CUDA device, run the GPU tests for
# real (no simulator) and the GPU benchmark, in under 5 minutes; results and the commands
# go to $OUT (when set) or benchmarks/results/.
#
#   benchmarks/gpu_check.sh             # a GPU machine: tests on the device + benchmark
#   benchmarks/gpu_check.sh --simulate  # anywhere: the same, tiny, under numba's simulator
#
# Without a usable device (and without --simulate) it says why and exits 3, running nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DEST=${OUT:-benchmarks/results}
mkdir -p "$DEST"
LOG="$DEST/gpu_check.log"
PYTEST=("$PY" -m pytest -q -p no:cacheprovider)
FAILED=0
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }
# step SECONDS CMD...: run one step under a time limit, echo it, log it, remember failures
step() {
    local limit=$1
    shift
    say "+ $*"
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    say "rc=$rc"
    [ "$rc" -eq 0 ] || FAILED=1
}

if [ "${1:-}" = "--simulate" ]; then
    export NUMBA_ENABLE_CUDASIM=1
    say "# gpu_check --simulate ($(date -u +%FT%TZ)): numba CUDA simulator on the CPU, no GPU"
    step 240 "${PYTEST[@]}" tests/test_gpu_kernels.py tests/test_gpu_arrayapi.py tests/test_gpu_backend.py
    step 420 "${PYTEST[@]}" tests/test_gpu_training.py tests/test_gpu_selector.py tests/test_gpu_dlpack.py tests/test_gpu_xmc.py tests/test_gpu_adapters.py
    step 120 "$PY" benchmarks/bench_gpu.py --simulate --out "$DEST/gpu-simulate.md"
    exit "$FAILED"
fi

# is there a device both CuPy and numba.cuda can use? (any exception means no)
if ! REASON=$("$PY" - <<'PYEOF' 2>&1
import lshcore
b = lshcore.registry.lookup("backend", "cupy")
if not b.available():
    print(b.why_unavailable())
    raise SystemExit(1)
import cupy
print(cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())
PYEOF
); then
    echo "gpu_check: no usable CUDA device here: ${REASON}" >&2
    echo "gpu_check: nothing ran; 'benchmarks/gpu_check.sh --simulate' runs the CPU dry run." >&2
    exit 3
fi

say "# gpu_check ($(date -u +%FT%TZ)) on ${REASON}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$LOG"
step 30 "$PY" -c "import cupy, numba; print('cupy', cupy.__version__, 'numba', numba.__version__)"
# the kernels on the device (the simulator run's checks), then the contract cases and the
# index on the cupy backend, for real
export LSHCORE_GPU_REAL=1
step 120 "${PYTEST[@]}" tests/test_gpu_kernels.py
step 90 "${PYTEST[@]}" tests/test_kernel_contract.py tests/test_index.py tests/test_gpu_backend.py -k cupy
# core training with CuPy-resident parameters against the NumPy reference (transfers counted)
step 150 "${PYTEST[@]}" tests/test_gpu_training.py
# the selector on the device against the NumPy reference selector, and its copies per step
step 120 "${PYTEST[@]}" tests/test_gpu_selector.py
# the XMC trainer with CuPy-resident weights and Adam state against the NumPy reference
step 90 "${PYTEST[@]}" tests/test_gpu_xmc.py
# the PyTorch adapter's forward on CUDA tensors, the selector picking on the device, against
# the same layer's host path (ids step for step; the framework's copies counted)
step 90 "${PYTEST[@]}" tests/test_gpu_adapters.py
step 150 "$PY" benchmarks/bench_gpu.py --out "$DEST/gpu.md"
exit "$FAILED"
