#!/usr/bin/env bash
# Train the embedded default on one GPU with its two-stage recipe (training/configs/gpu_pans.yaml, then
# gpu_default.yaml from its weights), then score it on the held-out synthetic scenes. Prints samples/s and tokens/s
# (training logs), GPU utilisation (nvidia-smi, sampled every second) and the held-out tables, and copies the
# exported weights, logs and scores to DEST.
#
#   bench/gpu_train_check.sh [DEST]            # DEST default: $OUT if set, else outputs/gpu_train_check
#
# Runs unchanged from the project checkout on any machine with CUDA and PyTorch (the project venv when there is
# one, else python3 with torch, numpy, opencv, pillow, pyyaml, safetensors, tqdm). At most 12 minutes on one GPU
# (8 of training). Knobs (environment): DEVICE (cuda), PANS_MINUTES (stage 1's budget, 2), MINUTES (stage 2's, 6),
# EVAL_SAMPLES (unset: evaluate.py's default set of 240), TRAIN_ARGS (extra --key=value overrides, both stages). The
# CI runs it on the CPU as a smoke test (DEVICE=cpu, seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-${OUT:-outputs/gpu_train_check}}
DEVICE=${DEVICE:-cuda}
PANS_MINUTES=${PANS_MINUTES:-2}
MINUTES=${MINUTES:-6}
EVAL_SAMPLES=${EVAL_SAMPLES:-}
TRAIN_ARGS=${TRAIN_ARGS:-}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
RUN=${RUN_DIR:-outputs/train/gpu_train_check}
PANS="${RUN}_pans"
mkdir -p "$DEST"
rm -rf "$RUN" "$PANS"
mkdir -p "$RUN" "$PANS"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's da3_core, installed or not

"$PY" - <<'PYEOF'
import torch, sys
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
PYEOF

UTIL_LOG="$RUN/gpu_util.csv"
SMI_PID=""
if [ "$DEVICE" = cuda ] && command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 > "$UTIL_LOG" &
  SMI_PID=$!
fi
cleanup() { if [ -n "$SMI_PID" ]; then kill "$SMI_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

T0=$(date +%s)
# shellcheck disable=SC2086
"$PY" training/train.py --config training/configs/gpu_pans.yaml --out_dir="$PANS" --device="$DEVICE" \
  --max_minutes="$PANS_MINUTES" $TRAIN_ARGS 2>&1 | tee "$DEST/train_pans_stdout.txt"
T1=$(date +%s)
# shellcheck disable=SC2086
"$PY" training/train.py --config training/configs/gpu_default.yaml --out_dir="$RUN" --device="$DEVICE" \
  --init_from="$PANS/final" --max_minutes="$MINUTES" $TRAIN_ARGS 2>&1 | tee "$DEST/train_stdout.txt"
T2=$(date +%s)
cleanup; SMI_PID=""

"$PY" - "$PANS/train_log.jsonl" "$RUN/train_log.jsonl" "$UTIL_LOG" "$((T1 - T0))" "$((T2 - T1))" <<'PYEOF'
import json, sys
from pathlib import Path
util = Path(sys.argv[3])
for name, log, wall in (("stage 1 (pans)", Path(sys.argv[1]), int(sys.argv[4])),
                        ("stage 2", Path(sys.argv[2]), int(sys.argv[5]))):
    recs = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
    steps = [r for r in recs if "samples_per_s" in r]
    done = [r for r in recs if r.get("event") == "done"]
    skip = len(steps) // 10  # leave out the first tenth (workers starting, compilation, warm caches)
    body = steps[skip:] or steps
    sps = sum(r["samples_per_s"] for r in body) / max(1, len(body))
    tps = sum(r["tokens_per_s"] for r in body) / max(1, len(body))
    last = steps[-1] if steps else {}
    print(f"training {name}: {done[0]['step'] if done else last.get('step')} steps in {wall} s (process wall time); "
          f"{sps:.1f} samples/s, {tps:.0f} tokens/s (mean of the log after the first tenth); last loss "
          f"{last.get('loss', float('nan')):.4f}; non-finite skips {done[0].get('nonfinite_skips') if done else '?'}")
if util.exists() and util.stat().st_size:
    vals = []
    for line in util.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[1].replace(".", "").isdigit():
            vals.append(float(parts[1]))
    if vals:
        core = vals[len(vals) // 10:] or vals
        print(f"GPU utilisation (nvidia-smi, 1 s samples, after the first tenth): mean {sum(core) / len(core):.0f} %, "
              f"median {sorted(core)[len(core) // 2]:.0f} %, {len(core)} samples")
else:
    print("GPU utilisation: not measured (no nvidia-smi or DEVICE is not cuda)")
PYEOF

"$PY" training/evaluate.py --weights "$RUN/final" --device "$DEVICE" ${EVAL_SAMPLES:+--samples "$EVAL_SAMPLES"} \
  --json "$DEST/heldout_scores.json" 2>&1 | tee "$DEST/heldout_stdout.txt"

mkdir -p "$DEST/weights"
cp "$RUN/final/model.safetensors" "$RUN/final/config.json" "$DEST/weights/"
cp "$RUN/train_log.jsonl" "$DEST/"
cp "$PANS/train_log.jsonl" "$DEST/train_log_pans.jsonl"
echo "weights, log and scores in $DEST"
