#!/usr/bin/env bash
# Rebuilds the shipped default model (inference/models/default.model) from scratch: generates
# every scenario on training seeds 1-6 and calibration seeds 100-105 with the M5 traces, then
# runs `stockgrid train` on them. Same build, same traces: the same model, byte for byte.
#
#   ops/train-default.sh [OUT]      (default: inference/models/default.model)
#
# Needs a release build (cargo build --release) and the M5 traces beside the project
# (../shared/data/m5, or STOCKGRID_M5_DIR). Runs go to target/train/.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-inference/models/default.model}"
traces="${STOCKGRID_M5_DIR:-../shared/data/m5}"
bin=target/release/stockgrid
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -f "$traces/calendar.csv" ] || { echo "no M5 traces at $traces (set STOCKGRID_M5_DIR)" >&2; exit 1; }
dirs=()
for seed in 1 2 3 4 5 6 100 101 102 103 104 105; do
  for scenario in baseline delayed-scans duplicate-storm stale-warehouse-feed regional-outage shrink-drift; do
    dir="target/train/$scenario-$seed"
    [ -f "$dir/manifest.json" ] || "$bin" sim generate --scenario "$scenario" --seed "$seed" --traces "$traces" --out "$dir" > /dev/null
    dirs+=(--dir "$dir")
  done
done
"$bin" train "${dirs[@]}" --out "$out" --export target/train/training-rows.csv
