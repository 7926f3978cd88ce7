#!/usr/bin/env bash
# What fencing costs: durable ingest of a node outside cluster mode beside the same node as a
# one-member grid (serve --cluster: every batch conditioned on its partitions' ownership
# records), on one private PostgreSQL, alternated ROUNDS times in one run; issue 16's target
# is 0.8x or better. docs/measurements.md's grid figures come from here.
#
# Each run: 16 clients x 1,000 events for DURATION seconds on a fresh database. The grid node
# first claims the store's 4,096 partitions; the run starts once `cluster status` shows every
# partition owned. Needs a release build (cargo build --release) and python3.
set -euo pipefail
BIN=${BIN:-target/release/stockgrid}
PORT=${PORT:-50082}
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
work=$(mktemp -d)
# shellcheck source=ops/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"
databases=()
for round in $(seq 1 "$ROUNDS"); do
    databases+=("single$round" "grid$round")
done
start_postgres "${databases[@]}"

wait_owned() { # every partition of the grid on $1 owned by a live member
    for _ in $(seq 1 240); do
        "$BIN" cluster status --store "$(url "$1")" --cluster bench --json 2>/dev/null |
            python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if not s["without_live_owner"] else 1)' &&
            return 0
        sleep 0.5
    done
    echo "the grid on $1 never owned every partition" >&2
    return 1
}

for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round: a single node"
    "$BIN" serve --listen "127.0.0.1:$PORT" --store "$(url "single$round")" >"$work/single$round.log" 2>&1 &
    serve=$!
    wait_serving "$PORT"
    lg --target "127.0.0.1:$PORT" --workload ingest --concurrency 16 --no-preload | record "single-$round"
    kill "$serve"
    wait "$serve" || true

    echo "== round $round: a one-member grid"
    "$BIN" serve --listen "127.0.0.1:$PORT" --store "$(url "grid$round")" \
        --cluster bench --node-id n1 --region r >"$work/grid$round.log" 2>&1 &
    serve=$!
    wait_serving "$PORT"
    wait_owned "grid$round"
    lg --target "127.0.0.1:$PORT" --workload ingest --concurrency 16 --no-preload | record "grid-$round"
    kill "$serve"
    wait "$serve" || true
done

echo "== summary"
python3 - "$results" "$ROUNDS" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    value = json.loads(line)
    runs[value["label"]] = value
rounds = int(sys.argv[2])
single = [runs[f"single-{r}"]["items_per_s"] for r in range(1, rounds + 1)]
grid = [runs[f"grid-{r}"]["items_per_s"] for r in range(1, rounds + 1)]
print("single node, events/s:      " + ", ".join(f"{v:,.0f}" for v in single))
print("one-member grid, events/s:  " + ", ".join(f"{v:,.0f}" for v in grid))
print("per round, grid / single:   " + ", ".join(f"{g / s:.2f}" for g, s in zip(grid, single)))
print(f"medians: {statistics.median(grid):,.0f} / {statistics.median(single):,.0f} = "
      f"{statistics.median(grid) / statistics.median(single):.2f}x (target 0.8x)")
PY
