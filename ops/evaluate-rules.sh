#!/usr/bin/env bash
# Generates every scenario on an evaluation seed with the M5 traces, answers its queries with
# `stockgrid replay --mode rules`, and evaluates all of them into one report.
#
#   ops/evaluate-rules.sh [SEED] [OUT]      (defaults: 1000, target/evaluation)
#
# Needs a release build (cargo build --release) and the M5 traces beside the project
# (../shared/data/m5, or STOCKGRID_M5_DIR). Writes OUT/<scenario>/ (the replay files and
# rules.jsonl) and OUT/report/ (metrics.json, report.html, plots).
set -euo pipefail
cd "$(dirname "$0")/.."
seed="${1:-1000}"
out="${2:-target/evaluation}"
traces="${STOCKGRID_M5_DIR:-../shared/data/m5}"
bin=target/release/stockgrid
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -f "$traces/calendar.csv" ] || { echo "no M5 traces at $traces (set STOCKGRID_M5_DIR)" >&2; exit 1; }
dirs=()
for scenario in baseline delayed-scans duplicate-storm stale-warehouse-feed regional-outage shrink-drift; do
  dir="$out/$scenario"
  "$bin" sim generate --scenario "$scenario" --seed "$seed" --traces "$traces" --out "$dir"
  "$bin" replay --mode rules --events "$dir/events.jsonl" --queries "$dir/queries.jsonl" \
    --locations "$dir/locations.jsonl" --out "$dir/rules.jsonl" > "$dir/replay.log"
  tail -n 1 "$dir/replay.log"
  dirs+=(--dir "$dir")
done
"$bin" sim evaluate "${dirs[@]}" --answers rules=rules.jsonl --report "$out/report"
