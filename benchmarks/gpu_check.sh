#!/usr/bin/env bash
# The GPU checks and GPU figures in one run, for a machine with a CUDA GPU and a Python that
# already holds torch (CUDA build), numba, safetensors, pyyaml, tqdm, scikit-learn, pandas,
# pytest and, for the peers, torchvision, timm and peft. Run from the repository root:
#
#     bash benchmarks/gpu_check.sh [LOG_DIR]
#
# 1. tests/test_gpu.py (streaming merges with --device cuda, merges, k-means, mixers and
#    training on CUDA against the CPU) and tests/merge/test_merge_fused.py (the CPU kernels on this
#    machine's CPU);
# 2. bench_stream.py with the workbench on cpu and cuda (no mergekit there);
# 3. bench_mixup.py --device cuda (torchvision and timm on the same GPU batches);
# 4. bench_merge.py --device cuda (PEFT on the same GPU tensors).
# Each step has its own time limit, so one slow step cannot eat the others' time.
# STEPS="pytest bench_merge" runs only the steps named.
set -u
STEPS="${STEPS:-pytest bench_stream bench_mixup bench_merge}"
LOG="${1:-gpu_logs}"
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
step() {  # step NAME SECONDS CMD...
  local name="$1" secs="$2"
  shift 2
  case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
  echo "=== $name (limit ${secs}s) ==="
  local t0=$SECONDS
  timeout "$secs" "$@" >"$LOG/$name.log" 2>&1
  local rc=$?
  echo "rc=$rc after $((SECONDS - t0))s"
  tail -n 25 "$LOG/$name.log"
}
"$PY" - <<'EOF' 2>&1 | tee "$LOG/env.log"
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda)
print("gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for m in ("numba", "safetensors", "yaml", "tqdm", "sklearn", "pandas", "torchvision", "timm", "peft"):
    try:
        mod = __import__(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as err:  # noqa: BLE001
        print(m, "MISSING", err)
EOF
nproc
step pytest 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/merge/test_merge_fused.py
step bench_stream 200 "$PY" benchmarks/bench_stream.py --no-mergekit --device "${STREAM_DEVICES:-cpu,cuda}" \
  --methods "${STREAM_METHODS:-linear,task_arithmetic,ties,dare_ties}" --workdir /tmp/bench_stream_gpu
step bench_mixup 120 "$PY" benchmarks/bench_mixup.py --device cuda --threads 16
step bench_merge "${MERGE_SECS:-120}" "$PY" benchmarks/bench_merge.py --device cuda
