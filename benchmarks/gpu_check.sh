#!/usr/bin/env bash
# One call on a GPU machine: build the GroupNorm extension, run the CUDA tests of tests/ops and of the non-local
# blocks (tests/models/test_nonlocal.py) and the GPU benchmarks.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]        # OUTDIR defaults to $OUT, else runs/gpu_check
#
# Needs python3 (or $PYTHON) with a CUDA build of torch, a visible GPU, nvcc (CUDA_HOME, /usr/local/cuda or PATH) and
# ninja; pytest for the test stages (without it they fail, saying so, and the benchmarks still run); triton optional
# (benchmark timing). gnvideo is used from this checkout (PYTHONPATH), not installed: nothing of decord, PyAV,
# jsonargparse or pytorchvideo is imported. CI runs the dry run (below) with the project's pins and with the GPU
# machine's packages, torch 2.11 (.ci/gpu_stack.txt); tests/ops/test_gpu_check_script.py.
#
# Stages, in order (the list is `stages` below; a benchmark stage is one line there):
#   build             python -m gnvideo.ops build (for the machine's own GPU)
#   cuda_tests        the CUDA tests of tests/ops (-m gpu) but the numerics grid: what only a GPU shows (torch.compile,
#                     opcheck, gradcheck, the profiler, > 2^31 elements) and the 41 shared cases; and the CUDA tests
#                     of tests/models/test_nonlocal.py (the attention kernels against the explicit form, fp32 and bf16)
#   bench_group_norm  bench_group_norm.py on i3d_r50's GN layers (8x32 config, bf16, both layouts, the model's ReLU)
#   bench_train_step  bench_train_step.py: an i3d_r50 step with BN, GN (F.group_norm) and GN (ours)
#   bench_nonlocal    bench_nonlocal.py --model-memory: one res3 non-local block (8 clips, bf16), attention kernel vs
#                     explicit matrix, and what i3d_r50_nl5 keeps for backward per clip beside i3d_r50
#   cuda_tests_rest   the numerics grid (test_numerics_vs_float64, 600 cases), which the shared cases and the emulated
#                     kernels mostly cover already: the benchmarks do not wait for it
#
# Time: the check ends within 8 minutes. Each stage has a limit estimated from what it runs (at `stages`, below); the
# limits may sum to BUDGET_S at most (checked before anything runs, the dry run included), and no stage runs past
# DEADLINE_S after the start. A test stage runs every selected test (no -x) and, once its limit is STOP_BEFORE_S away,
# stops after the running test (GNVIDEO_TESTS_STOP_AT, tests/conftest.py), so that its JUnit file and the summary
# list every result so far. A failed or timed-out stage is recorded and the next one runs, except after a failed build.
#
# Writes to OUTDIR: gpu_check.log (everything), summary.json (gpu_check_summary.py: device, versions, each stage's
# status, seconds, limit and reason; for a test stage the counts and every failed test), cuda_tests.xml and
# cuda_tests_rest.xml (JUnit) and one JSON file per benchmark stage (<stage>.json). Exit code: 0 when every stage
# passed, 1 when one did not, 2 when there is no GPU, nvcc or ninja (nothing run).
#
# GPU_CHECK_DRY_RUN=1 skips those checks and runs each stage's dry form against the installed torch instead:
# `python -m gnvideo.ops build --dry-run` (what would be compiled), `pytest --collect-only` of the stage's selection
# (at least one test) and each benchmark with `--dry-run` (arguments checked, models built on the CPU, nothing timed).
set -uo pipefail
OUTDIR="${1:-${OUT:-runs/gpu_check}}"
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd) || exit 1
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
LOG="$OUTDIR/gpu_check.log"
: >"$LOG"
PY="${PYTHON:-python3}"
DRY="${GPU_CHECK_DRY_RUN:-}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export GNVIDEO_CACHE_DIR="${GNVIDEO_CACHE_DIR:-$HOME/.cache/gnvideo}" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
BUDGET_S=450    # the sum of the stage limits: with the checks before (~10 s) and the summary (~5 s), within 8 minutes
DEADLINE_S=465  # no stage runs past this many seconds after the start
KILL_GRACE_S=5  # at a stage's limit: TERM, and KILL this much later
STOP_BEFORE_S=10  # a test stage stops after the running test this long before its limit
START=$SECONDS
STAGES=()       # one JSON object per stage
MODE=plan       # plan: only add up the limits; run: run the stages
PLANNED_S=0
BLOCKED=""      # why the remaining stages cannot run (set by a failed build)
STAGE_OUT=$(mktemp)
trap 'rm -f "$STAGE_OUT"' EXIT

log() { echo "[gpu_check $((SECONDS - START))s] $*" | tee -a "$LOG"; }

# record NAME STATUS EXIT SECONDS LIMIT REASON: one stage's entry of summary.json (the reason holds no quotes).
record() {
  STAGES+=("{\"stage\": \"$1\", \"status\": \"$2\", \"exit\": $3, \"seconds\": $4, \"limit\": $5, \"reason\": \"$6\"}")
  log "stage $1: $2 (exit $3) in $4s${6:+: $6}"
}

# planning LIMIT: in the planning pass, adds LIMIT to the planned total and is true; false when the stages run.
planning() {
  if [ "$MODE" = plan ]; then PLANNED_S=$((PLANNED_S + $1)); return 0; fi
  return 1
}

# clip LIMIT: sets LIMIT to the smaller of LIMIT and the seconds left before the deadline.
clip() {
  local left=$((START + DEADLINE_S - SECONDS))
  LIMIT=$(($1 < left ? $1 : left))
}

# run_stage NAME LIMIT CMD...: runs CMD under the clipped limit, its output into the log and $STAGE_OUT; sets RC,
# STATUS (passed | failed | timeout | not_run), REASON, ELAPSED and LIMIT (the one applied). Records nothing.
run_stage() {
  local name=$1 t0=$SECONDS
  clip "$2"
  shift 2
  RC=null ELAPSED=0 REASON=""
  : >"$STAGE_OUT"
  if [ -n "$BLOCKED" ]; then STATUS=not_run REASON=$BLOCKED; return; fi
  if ((LIMIT <= 0)); then STATUS=not_run REASON="no time left before the ${DEADLINE_S}s deadline"; return; fi
  log "stage $name (limit ${LIMIT}s): $*"
  timeout --signal=TERM --kill-after=$KILL_GRACE_S "$LIMIT" "$@" 2>&1 | tee -a "$LOG" >"$STAGE_OUT"
  RC=${PIPESTATUS[0]}
  ELAPSED=$((SECONDS - t0))
  STATUS=passed
  if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
    STATUS=timeout REASON="killed at its ${LIMIT}s limit"
  elif [ "$RC" != 0 ]; then  # the reason: the command's last line (pytest's counts, a benchmark's exit message)
    STATUS=failed REASON=$(grep -v '^[[:space:]]*$' "$STAGE_OUT" | tail -n 1 | tr -d '"\\\000-\037' | cut -c 1-200)
  fi
}

# build NAME LIMIT: compiles the extension; without it no other stage can run.
build() {
  planning "$2" && return
  if [ -n "$DRY" ]; then run_stage "$1" "$2" "$PY" -m gnvideo.ops build --dry-run
  else run_stage "$1" "$2" "$PY" -m gnvideo.ops build; fi
  record "$1" "$STATUS" "$RC" "$ELAPSED" "$LIMIT" "$REASON"
  if [ "$STATUS" != passed ] && [ -z "$BLOCKED" ]; then BLOCKED="the $1 stage did not pass"; fi
}

# tests NAME LIMIT KEYWORDS PATH...: the CUDA tests of the PATHs that `-k KEYWORDS` selects; JUnit XML in
# OUTDIR/NAME.xml.
tests() {
  planning "$2" && return
  local name=$1 limit=$2 keywords=$3
  shift 3
  rm -f "$OUTDIR/$name.xml"
  if [ -z "$BLOCKED" ] && ! "$PY" -c "import pytest" >/dev/null 2>&1; then
    record "$name" failed null 0 "$limit" "pytest is not installed for $PY (pip install pytest)"
    return
  fi
  # The machine's own pytest plugins (xdist, timeout, benchmark, ...) stay out: the tests run as in CI. One compile
  # thread: inductor keeps no worker pool, whose shutdown could hold the stage after its last test.
  local envs=(PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 TORCHINDUCTOR_COMPILE_THREADS=1)
  local args=(-p no:cacheprovider -m gpu -k "$keywords" "$@" --junitxml="$OUTDIR/$name.xml")
  if [ -n "$DRY" ]; then
    args+=(--collect-only -qq)
  else
    clip "$limit"
    envs+=(GNVIDEO_TESTS_STOP_AT=$(($(date +%s) + LIMIT - STOP_BEFORE_S)))
    args+=(-q --durations=15)
  fi
  run_stage "$name" "$limit" env "${envs[@]}" "$PY" -m pytest "${args[@]}"
  if [ "$RC" = 2 ] && grep -q GNVIDEO_TESTS_STOP_AT "$STAGE_OUT"; then
    STATUS=timeout REASON="stopped ${STOP_BEFORE_S}s before its ${LIMIT}s limit; the tests after it did not run"
  elif [ "$RC" = 5 ]; then
    STATUS=failed REASON="no test selected by -m gpu -k '$keywords' $*"
  elif [ "$RC" = 0 ] && [ -z "$DRY" ] && ! grep -Eq '[0-9]+ passed' "$STAGE_OUT"; then
    STATUS=failed REASON="no test passed: every selected test skipped (see the log)"
  fi
  record "$name" "$STATUS" "$RC" "$ELAPSED" "$LIMIT" "$REASON"
}

# bench NAME LIMIT SCRIPT ARGS...: a benchmark that writes OUTDIR/NAME.json (--json); with --dry-run in a dry run.
bench() {
  planning "$2" && return
  local name=$1 limit=$2
  shift 2
  rm -f "$OUTDIR/$name.json"
  run_stage "$name" "$limit" "$PY" "$@" --json "$OUTDIR/$name.json" ${DRY:+--dry-run}
  record "$name" "$STATUS" "$RC" "$ELAPSED" "$LIMIT" "$REASON"
}

# The stages in order, with their limits in seconds and the estimate behind each; the CPU measurements that the
# estimates start from are in README ("The GroupNorm kernel").
stages() {
  # Two sources, the .cu for sm_90 only (the visible GPU): about twice the CPU time of that build measured here.
  build build 150
  # 104 tests: CUDA and extension start ~10 s, two torch.compile tests (cold triton compiles) ~30 s, two tests past
  # 2^31 elements ~15 s, 18 gradchecks and the other 82 tests ~30 s: ~85 s (the same tests took longer on the CPU).
  # The 4 non-local tests (two blocks of 512 channels on 2 clips at 4 x 28 x 28 each, the first attention kernel
  # loads) and importing gnvideo.models ~3 s: ~88 s. 5 s went to bench_nonlocal (this stage had 25 s over its
  # estimate): its tests stop at 95 s.
  tests cuda_tests 105 "not test_numerics_vs_float64" tests/ops tests/models/test_nonlocal.py
  # 12 layers x 2 layouts x 3 implementations x (fwd, fwd+bwd) = 144 timings of ~0.15 s (do_bench: 25 ms warm-up,
  # 50 ms of repetitions, L2 flushes) = 22 s; 8 torch.compile graphs (2 layouts x 2 activations x inference/training)
  # at ~5 s and inductor's start ~10 s = 50 s; the copy bandwidth and allocations 5 s: ~80 s.
  bench bench_group_norm 90 benchmarks/bench_group_norm.py --configs 8x32 --dtypes bf16 --acts model --rep-ms 50
  # 3 models x (3 warm-up + 8 timed steps) of i3d_r50 on 8 clips x 32 x 224^2 at ~0.3 s = 10 s; cuDNN autotuning
  # (cudnn.benchmark) in the first steps ~20 s; three model builds 5 s: ~35 s. 15 s went to bench_nonlocal (this
  # stage had 25 s over its estimate, the most of any stage with cuda_tests).
  bench bench_train_step 45 benchmarks/bench_train_step.py --iters 8 --warmup 3
  # Python, torch and CUDA start ~8 s; 4 variants x (1 profiled + 2 warm-up + 10 timed steps) of one res3 block on
  # 8 clips (x of 8 x 512 x 4 x 28 x 28, bf16, ~5 ms a step at most) and the profiler's start ~3 s; 3 model builds
  # on the CPU ~3 s (1.8 s on the 2-core CPU) and one clip of 32 x 224^2 forward + backward each, with the first
  # cuDNN calls (no kernel search: cudnn.benchmark stays off), ~5 s: ~20 s.
  bench bench_nonlocal 25 benchmarks/bench_nonlocal.py --device cuda --iters 10 --warmup 2 --model-memory
  # 600 tests on small tensors, launch-bound: ~20 ms each = 12 s, and pytest, CUDA and extension start 10 s: ~22 s.
  # Last and least needed (the shared cases and the emulation cover most of it): a new stage can take time from it.
  tests cuda_tests_rest 35 test_numerics_vs_float64 tests/ops
}

stages
if ((PLANNED_S > BUDGET_S)); then
  log "the stage limits sum to ${PLANNED_S}s, more than the ${BUDGET_S}s budget: lower one (nothing run)"
  exit 1
fi
MODE=run

# One Python start for every precondition (importing torch takes seconds): a GPU, nvcc and ninja, else nothing runs.
DRY="$DRY" "$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import os
import sys

try:
    import torch
except ImportError as err:
    sys.exit(f"nothing run: torch is not installed for {sys.executable} ({err})")
if os.environ["DRY"]:
    print(f"dry run: no GPU checks; each stage runs its dry form against torch {torch.__version__}")
    sys.exit(0)
if not torch.cuda.is_available():
    sys.exit("nothing run: no CUDA device visible to torch (torch.cuda.is_available() is False)")
from torch.utils.cpp_extension import is_ninja_available

from gnvideo.ops import _extension

ok, why = _extension.can_build_cuda()
if not ok:
    sys.exit(f"nothing run: cannot build the CUDA extension here: {why}")
if not is_ninja_available():
    sys.exit("nothing run: ninja is not installed (torch.utils.cpp_extension needs it to build the extension)")
p = torch.cuda.get_device_properties(0)
print(f"device: {p.name}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB; "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}; {why}")
EOF
if [ "${PIPESTATUS[0]}" != 0 ]; then exit 2; fi

stages

"$PY" benchmarks/gpu_check_summary.py ${DRY:+--dry-run} "$OUTDIR" $((SECONDS - START)) "${STAGES[@]}" 2>&1 \
  | tee -a "$LOG"
log "done in $((SECONDS - START))s; files in $OUTDIR"
for s in "${STAGES[@]}"; do
  case "$s" in *'"status": "passed"'*) ;; *) exit 1 ;; esac
done
exit 0
