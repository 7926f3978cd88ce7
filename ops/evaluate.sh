#!/usr/bin/env bash
# Generates every scenario on an evaluation seed with the M5 traces, answers its queries with
# `stockgrid replay` in rules mode and in ml mode (the shipped model, or MODEL), and evaluates
# both, with the baselines, into one report.
#
#   ops/evaluate.sh [SEED] [OUT] [MODEL]     (defaults: 1000, target/evaluation, shipped)
#
# Needs a release build (cargo build --release) and the M5 traces beside the project
# (../shared/data/m5, or STOCKGRID_M5_DIR). Writes OUT/<scenario>/ (the replay files,
# rules.jsonl and ml.jsonl) and OUT/report/ (metrics.json, report.html, plots).
set -euo pipefail
cd "$(dirname "$0")/.."
seed="${1:-1000}"
out="${2:-target/evaluation}"
model=()
[ -n "${3:-}" ] && model=(--model "$3")
traces="${STOCKGRID_M5_DIR:-../shared/data/m5}"
bin=target/release/stockgrid
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -f "$traces/calendar.csv" ] || { echo "no M5 traces at $traces (set STOCKGRID_M5_DIR)" >&2; exit 1; }
dirs=()
for scenario in baseline delayed-scans duplicate-storm stale-warehouse-feed regional-outage shrink-drift; do
  dir="$out/$scenario"
  "$bin" sim generate --scenario "$scenario" --seed "$seed" --traces "$traces" --out "$dir" > /dev/null
  for mode in rules ml; do
    "$bin" replay --mode "$mode" "${model[@]}" --events "$dir/events.jsonl" --queries "$dir/queries.jsonl" \
      --locations "$dir/locations.jsonl" --out "$dir/$mode.jsonl" > "$dir/replay-$mode.log"
  done
  echo "$scenario: $(tail -n 1 "$dir/replay-ml.log")"
  dirs+=(--dir "$dir")
done
"$bin" sim evaluate "${dirs[@]}" --answers rules=rules.jsonl --answers ml=ml.jsonl --report "$out/report"
