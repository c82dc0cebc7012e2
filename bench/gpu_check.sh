#!/usr/bin/env bash
# One GPU check of inference and deployment, at most about 8 minutes on one GPU, no downloads:
#   1. forward img/s, ours vs the official network: VIEWS x HEIGHT x WIDTH (32 x 336 x 504), bf16, default TF32
#      settings, per variant (small, base, large, giant)                                  (bench/forward.py)
#   2. latency of LAT_VARIANT at 1 and 8 views, eager vs the captured graph (CUDA graph)  (bench/forward.py --graph)
#   3. ONNX Runtime latency and parity with the CUDA / TensorRT providers, where installed (bench/ort.py)
#   4. the node end to end on the device (latency p50/p95, frames/s, drops, GPU utilisation), where rclpy is
#      installed                                                                           (bench/node.py)
#   5. training samples/s and tokens/s for the tiny and small configs                       (bench/train.py)
#
#   bench/gpu_check.sh [DEST]          # DEST default: $OUT if set, else outputs/gpu_check
#
# Everything goes to DEST/gpu_check.log (and DEST/gpu_util.csv): two files. A section that cannot run on this
# machine says why and is skipped; one that runs past its time limit is cut and the next one runs. It needs only the
# project checkout and a python3 with PyTorch (the project venv when there is one). The official network is the
# baseline of section 1 when `depth_anything_3` is importable; to bring it to a machine without internet, put its
# wheel (and any of its pure-Python dependencies that machine lacks) in .carry/wheels (an ignored folder of the
# checkout): `pip download depth-anything-3==0.1.1 --no-deps -d .carry/wheels`; they are installed into a
# temporary folder, never into the system.
# Knobs (environment): DEVICE (cuda), VARIANTS, VIEWS, HEIGHT, WIDTH, RUNS, LAT_VARIANT, LAT_VIEWS, GRAPH (1),
# ORT (1), NODE_FRAMES (300; 0 skips the node), NODE_RATE (30), NODE_SIZE (640x480), TRAIN_CONFIGS, TRAIN_STEPS,
# and T_FORWARD / T_LATENCY / T_ORT / T_NODE / T_TRAIN (seconds per section). The CI runs it on the CPU with tiny
# settings as a smoke test (test/core/test_gpu_check.py).
set -uo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-${OUT:-outputs/gpu_check}}
DEVICE=${DEVICE:-cuda}
VARIANTS=${VARIANTS:-"da3-small da3-base da3-large da3-giant"}
VIEWS=${VIEWS:-32}
HEIGHT=${HEIGHT:-336}
WIDTH=${WIDTH:-504}
RUNS=${RUNS:-5}
LAT_VARIANT=${LAT_VARIANT:-da3-small}
LAT_VIEWS=${LAT_VIEWS:-"1 8"}
GRAPH=${GRAPH:-1}
ORT=${ORT:-1}
NODE_FRAMES=${NODE_FRAMES:-300}
NODE_RATE=${NODE_RATE:-30}
NODE_SIZE=${NODE_SIZE:-640x480}
TRAIN_CONFIGS=${TRAIN_CONFIGS:-"training/configs/tiny_default.yaml training/configs/small.yaml"}
TRAIN_STEPS=${TRAIN_STEPS:-20}
T_FORWARD=${T_FORWARD:-55}
T_LATENCY=${T_LATENCY:-70}
T_ORT=${T_ORT:-60}
T_NODE=${T_NODE:-70}
T_TRAIN=${T_TRAIN:-90}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
mkdir -p "$DEST"
LOG="$DEST/gpu_check.log"
UTIL="$DEST/gpu_util.csv"
: > "$LOG"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's da3_core, installed or not
BF16=bf16
[ "$DEVICE" = cuda ] || BF16=fp32  # bf16 on the CPU is opt-in and needs native support: the smoke test runs fp32

say() { echo "$*" | tee -a "$LOG"; }
# section NAME SECONDS CMD...: run CMD with a time limit, its output into the log; never stops the script
section() {
  local name=$1 limit=$2
  shift 2
  say ""
  say "=== $name (limit ${limit} s)"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then say "--- $name: cut at its ${limit} s limit"; fi
  if [ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$rc" != 137 ]; then say "--- $name: failed (exit $rc)"; fi
  say "--- $name: $((SECONDS - t0)) s"
}

if ls .carry/wheels/*.whl >/dev/null 2>&1; then
  PYDEPS=$(mktemp -d)
  "$PY" -m pip install --quiet --no-deps --no-index --target "$PYDEPS" .carry/wheels/*.whl >>"$LOG" 2>&1 \
    && export PYTHONPATH="$PYTHONPATH:$PYDEPS"
fi

"$PY" - <<'PYEOF' 2>&1 | tee -a "$LOG"
import importlib.util, sys
import torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
for name in ("depth_anything_3", "onnxruntime", "rclpy"):
    print(f"  {name}: {'found' if importlib.util.find_spec(name) else 'not installed'}")
PYEOF

SMI_PID=""
start_util() {
  if [ "$DEVICE" = cuda ] && command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 >> "$UTIL" &
    SMI_PID=$!
  fi
}
stop_util() { if [ -n "$SMI_PID" ]; then kill "$SMI_PID" 2>/dev/null || true; SMI_PID=""; fi; }
trap stop_util EXIT
util_summary() {  # util_summary LINES_BEFORE: mean / median GPU utilisation of the samples appended since
  [ -s "$UTIL" ] || { say "GPU utilisation: not measured (no nvidia-smi or DEVICE is not cuda)"; return; }
  tail -n +"$(( $1 + 1 ))" "$UTIL" | "$PY" -c '
import sys
v = sorted(float(p[1]) for p in (l.split(",") for l in sys.stdin) if len(p) > 1 and p[1].strip().replace(".", "").isdigit())
print(f"GPU utilisation (nvidia-smi, 1 s samples): mean {sum(v) / len(v):.0f} %, median {v[len(v) // 2]:.0f} %, {len(v)} samples" if v else "GPU utilisation: no samples")
' | tee -a "$LOG"
}
util_lines() { if [ -s "$UTIL" ]; then wc -l < "$UTIL"; else echo 0; fi; }
: > "$UTIL"

# 1. forward throughput, ours vs official
for v in $VARIANTS; do
  section "forward $v, $VIEWS views ${HEIGHT}x${WIDTH}, $BF16" "$T_FORWARD" \
    "$PY" bench/forward.py --variant "$v" --views "$VIEWS" --height "$HEIGHT" --width "$WIDTH" --runs "$RUNS" \
    --device "$DEVICE" --baseline-precision "$BF16"
done

# 2. latency, eager vs captured graph
if [ "$GRAPH" = 1 ]; then
  # shellcheck disable=SC2086
  section "latency $LAT_VARIANT, eager vs graph, $BF16" "$T_LATENCY" \
    "$PY" bench/forward.py --variant "$LAT_VARIANT" --views $LAT_VIEWS --height "$HEIGHT" --width "$WIDTH" \
    --runs "$((RUNS * 4))" --device "$DEVICE" --baseline-precision "$BF16" --graph
fi

# 3. ONNX Runtime on the GPU providers
if [ "$ORT" = 1 ]; then
  PROVIDERS=$("$PY" -c 'import onnxruntime as o; p = o.get_available_providers(); print(" ".join(n for k, n in (("TensorrtExecutionProvider", "tensorrt"), ("CUDAExecutionProvider", "cuda")) if k in p))' 2>/dev/null)
  if [ "$DEVICE" != cuda ]; then PROVIDERS=cpu; fi
  if [ -z "$PROVIDERS" ]; then
    say ""; say "=== ONNX Runtime: skipped (no onnxruntime with the CUDA or TensorRT provider: onnxruntime-gpu)"
  else
    for p in $PROVIDERS; do
      section "ONNX Runtime $LAT_VARIANT, 8 views, provider $p" "$T_ORT" \
        "$PY" bench/ort.py --variant "$LAT_VARIANT" --views 8 --height "$HEIGHT" --width "$WIDTH" --device "$DEVICE" \
        --providers "$p" --runs "$RUNS"
    done
  fi
fi

# 4. the node end to end
if [ "$NODE_FRAMES" -gt 0 ]; then
  if "$PY" -c 'import rclpy, da3_ros_interfaces' >/dev/null 2>&1; then
    n0=$(util_lines); start_util
    section "node end to end, $NODE_SIZE at $NODE_RATE Hz, embedded default on $DEVICE" "$T_NODE" \
      "$PY" bench/node.py --predictor da3 --device "$DEVICE" --size "$NODE_SIZE" --rate "$NODE_RATE" \
      --frames "$NODE_FRAMES"
    stop_util; util_summary "$n0"
  else
    say ""; say "=== node end to end: skipped (rclpy / da3_ros_interfaces not importable: run it from the make venv)"
  fi
fi

# 5. training throughput
n0=$(util_lines); start_util
# shellcheck disable=SC2086
section "training step, $TRAIN_STEPS steps per config" "$T_TRAIN" \
  "$PY" bench/train.py --device "$DEVICE" --steps "$TRAIN_STEPS" --warmup 3 --configs $TRAIN_CONFIGS
stop_util; util_summary "$n0"
say ""
say "gpu_check done in $SECONDS s; log: $LOG"
