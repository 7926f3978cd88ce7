#!/usr/bin/env bash
# What the router costs: a batch of 100 lookups sent to the node that owns every pair in it,
# beside the same kind of batch sent to another node of the grid (which forwards it to the
# owner over the peer service and merges the answers), alternated ROUNDS times in one run on
# one private PostgreSQL. Issue 16's target: through a non-owner at most 2x the latency of
# direct. docs/measurements.md's router figures come from here.
#
# A two-node grid (a and b) shares the store's partitions; PAIRS pairs are counted once through
# a; each run sends closed-loop batches of 100 pairs that b owns (loadgen --owned-by b) from
# CONCURRENCY clients for DURATION seconds, to b (direct) or to a (routed). Needs a release
# build (cargo build --release) and python3.
set -euo pipefail
BIN=${BIN:-target/release/stockgrid}
PORT_A=${PORT_A:-50083}
PORT_B=${PORT_B:-50084}
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
PAIRS=${PAIRS:-20000}
CONCURRENCY=${CONCURRENCY:-4}
work=$(mktemp -d)
# shellcheck source=ops/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"
start_postgres router

config="$work/grid.toml"
printf '[cluster]\nmax_moves_per_round = 4096\n' >"$config"
for node in a b; do
    port=$PORT_A
    [ "$node" = b ] && port=$PORT_B
    "$BIN" serve --listen "127.0.0.1:$port" --store "$(url router)" --config "$config" \
        --cluster bench --node-id "$node" --region r >"$work/$node.log" 2>&1 &
done
wait_serving "$PORT_A"
wait_serving "$PORT_B"
echo "== waiting for a and b to share every partition, unchanged for 3 s"
previous=
for _ in $(seq 1 240); do
    owners=$("$BIN" cluster status --store "$(url router)" --cluster bench --json 2>/dev/null |
        python3 -c 'import json,sys
s=json.load(sys.stdin)
live=[m for m in s["members"] if m["live"] and m["partitions"] > 0]
print(json.dumps(s["owners"]) if len(live) == 2 and not s["without_live_owner"] else "")' || true)
    if [ -n "$owners" ] && [ "$owners" = "$previous" ]; then
        break
    fi
    previous=$owners
    sleep 3
done
[ -n "$previous" ] || { echo "the grid never settled" >&2; exit 1; }

echo "== counting $PAIRS pairs through a"
"$BIN" loadgen --target "127.0.0.1:$PORT_A" --workload point --concurrency 1 --duration 1 \
    --pairs "$PAIRS" --json >/dev/null 2>>"$work/loadgen.log"
batch() { lg --target "127.0.0.1:$1" --workload batch --batch-items 100 --concurrency "$CONCURRENCY" \
    --pairs "$PAIRS" --no-preload --owned-by b; }
for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round"
    batch "$PORT_B" | record "direct-$round"
    batch "$PORT_A" | record "routed-$round"
done

echo "== summary"
python3 - "$results" "$ROUNDS" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    value = json.loads(line)
    runs[value["label"]] = value
rounds = range(1, int(sys.argv[2]) + 1)
for label in ("direct", "routed"):
    errors = sum(runs[f"{label}-{r}"]["errors"] for r in rounds)
    unanswered = sum(runs[f"{label}-{r}"]["owner_unavailable"] for r in rounds)
    if errors or unanswered:
        sys.exit(f"{label}: {errors} failed calls, {unanswered} lookups OWNER_UNAVAILABLE")
def pct(label, p):
    return [runs[f"{label}-{r}"]["latency_ms"][p] for r in rounds]
for p in ("p50", "p99"):
    direct, routed = pct("direct", p), pct("routed", p)
    print(f"{p} ms, direct to the owner: " + ", ".join(f"{v:.2f}" for v in direct))
    print(f"{p} ms, through the other:   " + ", ".join(f"{v:.2f}" for v in routed))
    print(f"{p} medians: {statistics.median(routed):.2f} / {statistics.median(direct):.2f} = "
          f"{statistics.median(routed) / statistics.median(direct):.2f}x (target at most 2x)")
direct = [runs[f"direct-{r}"]["requests_per_s"] for r in rounds]
routed = [runs[f"routed-{r}"]["requests_per_s"] for r in rounds]
print(f"batches/s medians: routed {statistics.median(routed):,.0f}, direct {statistics.median(direct):,.0f}")
PY
