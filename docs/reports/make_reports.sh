#!/usr/bin/env bash
# Regenerate the committed evaluation reports under docs/reports/ with the embedded default model
# (da3_core/assets/default; `da3 eval` uses it when --weights is omitted), at 168 px (its training size) and with the
# first view as the reference (as it was trained and as the node runs it). Run from the repository root after
# `make .venv`. The real-data reports read ../shared/data (research licences: the data is never copied here).
# Add --tsdf to any command for TSDF-fused reconstruction metrics (needs requirements/eval.txt + libusb-1.0-0).
set -euo pipefail
cd "$(dirname "$0")/../.."
DA3="${DA3:-.venv/bin/da3}"
DATA="${DATA:-../shared/data}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-2}"
test -f da3_core/assets/default/model.safetensors || { echo "no embedded weights at da3_core/assets/default" >&2; exit 1; }

# 1. Synthetic benchmark: the three procedural scene kinds, two trajectories each, 8 views at 252x189.
"$DA3" eval --title "DA3 (embedded) - synthetic benchmark" --out docs/reports/synthetic \
  --dataset "synthetic:kind=room,seed=100,frames=8,path=walk,size=252x189;kind=room,seed=101,frames=8,path=orbit,size=252x189;kind=objects,seed=102,frames=8,path=orbit,size=252x189;kind=objects,seed=103,frames=8,path=walk,size=252x189;kind=courtyard,seed=104,frames=8,path=walk,size=252x189;kind=courtyard,seed=105,frames=8,path=orbit,size=252x189" \
  --process-res 168 --ref-view first

# 2. 7-Scenes redkitchen, 10 real frames with GT depth + poses, from the generated rosbag2 (MCAP).
"$DA3" eval --title "DA3 (embedded) - 7-Scenes redkitchen (rosbag2, 10 frames)" --out docs/reports/7scenes_bag \
  --dataset "bag:$DATA/ros2_bag_7scenes_generated/redkitchen_10f_mcap" --process-res 168 --ref-view first

# 3. TUM fr2/desk pair: depth only (no GT poses); fr2 intrinsics are taken from the folder name.
"$DA3" eval --title "DA3 (embedded) - TUM fr2/desk pair (depth only)" --out docs/reports/tum_fr2_desk_pair \
  --dataset "tum:$DATA/tum_fr2_desk_pair_slambook2" --process-res 168 --ref-view first
