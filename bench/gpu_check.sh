#!/usr/bin/env bash
# One-command GPU check for the animator (issue 16). Usage:
#
#   bench/gpu_check.sh OUT_DIR            # on a CUDA machine: <= 9 minutes, needs PyPI
#   bench/gpu_check.sh OUT_DIR --dry-run  # on any CPU: the same steps with the project's
#                                         # .venv, reduced width, < 2 minutes, no install
#
# Real run: a fresh venv (GPU_CHECK_VENV, default /tmp/dynamics-gpu-venv) gets the CUDA image's
# hash-locked requirements (requirements/animator-gpu.txt: torch's CUDA wheels, onnxruntime-gpu,
# TensorRT 10), then onnx/onnxscript/pytest; then the `gpu` tests run and
# `python -m bench.gpu_check` measures (torch fp16/bf16 eager/compile/CUDA graphs at batch
# 1-32, ORT CUDA EP, TensorRT EP fp16, GridSample placement, one 10 s job pipelined) and writes
# OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md; the pytest log goes to OUT_DIR/gpu_tests.txt.
# Each phase has its own timeout so the whole stays inside 9 minutes (540 s).
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 OUT_DIR [--dry-run]" >&2
  exit 2
fi
OUT=$1
DRY=0
[ "${2:-}" = "--dry-run" ] && DRY=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
START=$(date +%s)
left() { echo $(( 540 - ($(date +%s) - START) )); }

# The CUDA lock split in two (TensorRT apart, see the install phase); a dry run splits it too,
# so CI checks the split.
awk -v main="$OUT/lock-main.txt" -v trt="$OUT/lock-tensorrt.txt" \
  '/^#/ {next} /^[A-Za-z0-9]/ {t = ($0 ~ /^tensorrt/)} {print > (t ? trt : main)}' \
  requirements/animator-gpu.txt

if [ "$DRY" = 1 ]; then
  PY="$ROOT/.venv/bin/python"
  [ -x "$PY" ] || PY=python3
  BUDGET=60
else
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader > "$OUT/nvidia_smi.txt" || true
  VENV=${GPU_CHECK_VENV:-/tmp/dynamics-gpu-venv}
  python3 -m venv "$VENV"
  PY="$VENV/bin/python"
  # install phase: at most 4 minutes (wheels: torch + CUDA libraries ~3 GB, TensorRT ~1 GB).
  # The image's own hash-locked files (docker/Dockerfile.gpu), then the check's tools.
  # TensorRT goes last and on its own: its libraries come from pypi.nvidia.com (a wheel-stub on
  # PyPI), and a machine that reaches only PyPI still measures everything else; the TensorRT
  # rows then say onnxruntime fell back, and OUT_DIR/tensorrt_install.txt says why.
  PIPI=("$PY" -m pip install -q --disable-pip-version-check --require-hashes --no-deps)
  timeout 60 "${PIPI[@]}" -r requirements/animator-gpu-build.txt
  timeout $(( $(left) - 300 )) "${PIPI[@]}" --no-build-isolation -r "$OUT/lock-main.txt"
  set +e
  timeout $(( $(left) - 280 > 120 ? 120 : $(left) - 280 > 10 ? $(left) - 280 : 10 )) \
    "${PIPI[@]}" --no-build-isolation -r "$OUT/lock-tensorrt.txt" \
    > "$OUT/tensorrt_install.txt" 2>&1
  echo "tensorrt install: exit $? (log: $OUT/tensorrt_install.txt)"
  set -e
  timeout $(( $(left) - 280 > 60 ? $(left) - 280 : 60 )) bash -c "
    '$PY' -m pip install -q --disable-pip-version-check onnx onnxscript pytest pytest-timeout &&
    '$PY' -m pip install -q --no-deps --no-build-isolation -e . &&
    '$PY' -m pip check"
  BUDGET=$(( $(left) - 120 ))
fi

# the gpu-marked tests (they skip without CUDA: in a dry run they report as skipped)
set +e
timeout $(( DRY == 1 ? 60 : 90 )) "$PY" -m pytest -q -m gpu -p no:cacheprovider \
  tests/unit/animator > "$OUT/gpu_tests.txt" 2>&1
TESTS=$?
set -e
# 5 = no tests collected (not the case here), 0 = passed (or all skipped on a CPU)
echo "gpu tests: exit $TESTS ($(tail -1 "$OUT/gpu_tests.txt"))"

ARGS=("$OUT" --budget-s "$BUDGET")
[ "$DRY" = 1 ] && ARGS+=(--dry-run)
set +e
timeout $(( $(left) > 30 ? $(left) : 30 )) "$PY" -m bench.gpu_check "${ARGS[@]}"
CHECK=$?
set -e
echo "gpu check: exit $CHECK, $(( $(date +%s) - START )) s, report in $OUT"
[ "$TESTS" = 0 ] && [ "$CHECK" = 0 ]
