#!/usr/bin/env bash
# One call on a GPU machine: build the GroupNorm extension, run the CUDA tests of tests/ops, then both benchmarks.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]        # OUTDIR defaults to $OUT, else runs/gpu_check
#
# Needs python3 with a CUDA build of torch, a visible GPU and nvcc (CUDA_HOME, /usr/local/cuda or PATH); pytest for
# the test stage (skipped with a message when missing); triton optional (benchmark timing). gnvideo is used from this
# checkout (PYTHONPATH), not installed, so nothing beyond torch is needed. Each stage has a time limit so the whole
# run ends within 8 minutes; a failed or timed-out stage is recorded and the next one still runs.
# Writes to OUTDIR: gpu_check.log (everything), summary.json (device, versions, each stage's status and seconds),
# pytest.xml (JUnit), bench_group_norm.json, bench_train_step.json. Exit code: 0 when every stage passed, 1 when one
# failed, 2 when no GPU / no nvcc (nothing run). GPU_CHECK_DRY_RUN=1 skips those checks and only prints each stage's
# command (what the CPU test of this script runs).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUTDIR="${1:-${OUT:-runs/gpu_check}}"
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu_check.log"
: >"$LOG"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export GNVIDEO_CACHE_DIR="${GNVIDEO_CACHE_DIR:-$HOME/.cache/gnvideo}" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
START=$SECONDS
STAGES=()

log() { echo "[gpu_check $((SECONDS - START))s] $*" | tee -a "$LOG"; }

# stage NAME LIMIT_SECONDS CMD...: runs CMD with a time limit, appends its output to the log, records the status.
stage() {
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  log "stage $name (limit ${limit}s): $*"
  if [ -n "${GPU_CHECK_DRY_RUN:-}" ]; then set -- echo "dry run:" "$@"; fi
  timeout --signal=TERM --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  local status=passed
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status=timeout; elif [ "$rc" != 0 ]; then status=failed; fi
  log "stage $name: $status (exit $rc) in $((SECONDS - t0))s"
  STAGES+=("{\"stage\": \"$name\", \"status\": \"$status\", \"exit\": $rc, \"seconds\": $((SECONDS - t0))}")
}

if [ -n "${GPU_CHECK_DRY_RUN:-}" ]; then
  log "dry run: no GPU checks, stages only print their commands"
elif ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >>"$LOG" 2>&1; then
  log "no CUDA device visible to torch (torch.cuda.is_available() is False, or torch is missing): nothing run"
  exit 2
elif ! "$PY" -c "import sys; from gnvideo.ops import _extension as e; ok, why = e.can_build_cuda(); print(why); sys.exit(0 if ok else 1)" >>"$LOG" 2>&1; then
  log "cannot build the CUDA extension here (see the line above in $LOG): nothing run"
  exit 2
fi
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import torch
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device: {p.name}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB; "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF

stage build 240 "$PY" -m gnvideo.ops build
if "$PY" -c "import pytest" >/dev/null 2>&1; then
  stage cuda_tests 150 "$PY" -m pytest -q -x -p no:cacheprovider -m gpu tests/ops --junitxml="$OUTDIR/pytest.xml"
else
  log "pytest is not installed: cuda_tests skipped (carry pytest as a wheel, see /work/.library/device/README.md)"
  STAGES+=("{\"stage\": \"cuda_tests\", \"status\": \"skipped\", \"exit\": null, \"seconds\": 0}")
fi
stage bench_group_norm 100 "$PY" benchmarks/bench_group_norm.py --configs 8x32 --acts model \
  --json "$OUTDIR/bench_group_norm.json"
stage bench_train_step 90 "$PY" benchmarks/bench_train_step.py --iters 8 --warmup 3 \
  --json "$OUTDIR/bench_train_step.json"

STAGES_JSON=$(IFS=,; echo "${STAGES[*]}")
STAGES_JSON="$STAGES_JSON" TOTAL=$((SECONDS - START)) "$PY" - "$OUTDIR/summary.json" <<'EOF' 2>&1 | tee -a "$LOG"
import json, os, sys, torch
stages = json.loads("[" + os.environ["STAGES_JSON"] + "]")
p = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None
summary = {"device": p.name if p else None, "sms": p.multi_processor_count if p else None, "torch": torch.__version__,
           "cuda": torch.version.cuda, "seconds": int(os.environ["TOTAL"]), "stages": stages}
with open(sys.argv[1], "w") as fh:
    json.dump(summary, fh, indent=1)
print(json.dumps(summary))
EOF
log "done in $((SECONDS - START))s; files in $OUTDIR"
for s in "${STAGES[@]}"; do
  case "$s" in *'"failed"'*|*'"timeout"'*) exit 1 ;; esac
done
exit 0
