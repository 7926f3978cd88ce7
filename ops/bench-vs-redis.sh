#!/usr/bin/env bash
# Measures `stockgrid serve` with `stockgrid loadgen` beside its floors and beside Redis, on
# this machine, in one run: docs/measurements.md's figures come from here.
#
#   - Redis: redis-benchmark GET, 50 clients, unpipelined (no persistence);
#   - the point and batch floor: `stockgrid loadgen --serve-floor`, the same gRPC services
#     answering without doing anything, driven by the same load generator;
#   - stockgrid (embedded store, fsync per group commit, the default ml mode): point lookups,
#     batch lookups of 100, durable ingest, and lookups with ingest open loop at half its
#     solo rate;
#   - the store floor: the embedded store alone absorbing the writes of a durable ingest.
#
# Each line is the JSON of `stockgrid loadgen --json`, labelled; a summary of the ratios the
# targets are stated in follows. Needs: a release build (cargo build --release), python3 and
# Debian's redis-server / redis-tools.
set -euo pipefail
BIN=${BIN:-target/release/stockgrid}
PORT=${PORT:-50071}
FLOOR_PORT=${FLOOR_PORT:-50072}
REDIS_PORT=${REDIS_PORT:-6399}
DURATION=${DURATION:-8}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
results="$work/results.jsonl"

record() { # label, then the JSON line on stdin
    local line
    line=$(cat)
    echo "$1 $line"
    python3 -c 'import json,sys; v=json.loads(sys.argv[2]); v["label"]=sys.argv[1]; print(json.dumps(v))' "$1" "$line" >>"$results"
}
wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

echo "== redis-server (no persistence), redis-benchmark GET, 50 clients, unpipelined"
redis-server --port "$REDIS_PORT" --save "" --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
wait_port "$REDIS_PORT"
redis-benchmark -p "$REDIS_PORT" -t get -c 50 -n 500000 --csv | tail -n 1 |
    python3 -c 'import csv,json,sys; r=next(csv.reader(sys.stdin)); print(json.dumps({"workload":"redis-get","requests_per_s":float(r[1]),"items_per_s":float(r[1])}))' |
    record redis-get
redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true

lg() { "$BIN" loadgen --duration "$DURATION" --json "$@" 2>/dev/null; }
wait_serving() { # a node answers UNAVAILABLE while it recovers: wait for an answer
    for _ in $(seq 1 120); do
        "$BIN" loadgen --target "127.0.0.1:$1" --workload point --concurrency 1 --duration 1 \
            --no-preload --json 2>/dev/null | grep -q '"errors":0,' && return 0
        sleep 0.5
    done
    echo "the node on port $1 did not start serving" >&2
    return 1
}

echo "== the floor: the same services answering without doing anything"
"$BIN" loadgen --serve-floor "127.0.0.1:$FLOOR_PORT" >"$work/floor.log" 2>&1 &
floor=$!
wait_port "$FLOOR_PORT"
lg --target "127.0.0.1:$FLOOR_PORT" --workload point --concurrency 50 --no-preload | record floor-point
lg --target "127.0.0.1:$FLOOR_PORT" --workload batch --concurrency 16 --no-preload | record floor-batch
kill "$floor"

echo "== stockgrid serve (embedded store, fsync per group commit, ml mode)"
"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$work/data" >"$work/serve.log" 2>&1 &
serve=$!
wait_port "$PORT"
wait_serving "$PORT"
lg --target "127.0.0.1:$PORT" --workload point --concurrency 50 | record point
lg --target "127.0.0.1:$PORT" --workload point --concurrency 50 --rate 25000 --no-preload | record point-open-25k
lg --target "127.0.0.1:$PORT" --workload batch --concurrency 16 --no-preload | record batch
lg --target "127.0.0.1:$PORT" --workload ingest --concurrency 16 --no-preload | record ingest
half=$(python3 -c 'import json,sys; print(int(json.loads(sys.argv[1])["items_per_s"] / 2))' \
    "$(grep '"label": "ingest"' "$results")")
lg --target "127.0.0.1:$PORT" --workload mixed --concurrency 50 --ingest-rate "$half" --no-preload |
    record "mixed-ingest-at-half"
# The same ingest beside lookups sent open loop at 2,000 requests/s: their service latency,
# without the queueing that closed-loop clients on a saturated machine add.
lg --target "127.0.0.1:$PORT" --workload mixed --concurrency 50 --rate 2000 --ingest-rate "$half" --no-preload |
    record "open-lookups-ingest-at-half"
lg --target "127.0.0.1:$PORT" --workload mixed --concurrency 50 --no-preload | record mixed-70-20-10

echo "== the same node in rules mode (what the ml decision costs)"
kill "$serve"
wait "$serve" || true   # its shutdown snapshots every pair: the store is free once it exits
printf '[decisions]\nmode = "rules"\n' >"$work/rules.toml"
"$BIN" serve --config "$work/rules.toml" --listen "127.0.0.1:$PORT" --data-dir "$work/data" >"$work/serve-rules.log" 2>&1 &
serve=$!
wait_port "$PORT"
wait_serving "$PORT"
# The restart passivated every pair: activate them again before measuring (not recorded).
"$BIN" loadgen --target "127.0.0.1:$PORT" --workload batch --concurrency 16 --duration 5 --no-preload >/dev/null 2>&1
lg --target "127.0.0.1:$PORT" --workload point --concurrency 50 --no-preload | record rules-point
lg --target "127.0.0.1:$PORT" --workload batch --concurrency 16 --no-preload | record rules-batch
kill "$serve"
wait "$serve" || true

echo "== the store floor: the embedded store alone absorbing the writes of a durable ingest"
"$BIN" loadgen --store-floor "$work/store-floor" --events 1000000 --json 2>/dev/null | record store-floor

echo "== summary"
python3 - "$results" <<'EOF'
import json, sys
runs = {}
for line in open(sys.argv[1]):
    value = json.loads(line)
    runs[value["label"]] = value
def rate(label, kind=None):
    value = runs[label]
    return (value["by_kind"][kind] if kind else value)["items_per_s"]
def p99(label, kind=None):
    value = runs[label]
    return (value["by_kind"][kind] if kind else value)["latency_ms"]["p99"]
point, batch, ingest = rate("point"), rate("batch"), rate("ingest")
mixed = "mixed-ingest-at-half"
lookup_p99 = max(p99(mixed, kind) for kind in ("point", "batch") if kind in runs[mixed]["by_kind"])
rows = [
    ("ml point lookups, 50 clients", f"{point:,.0f}/s", f"{point / rate('redis-get'):.2f}x Redis GET (target 0.5x)"),
    ("", "", f"{point / rate('floor-point'):.2f}x the point floor (target 0.8x)"),
    ("ml batch of 100, 16 clients", f"{batch:,.0f} items/s (target 500 K)", f"{batch / rate('floor-batch'):.2f}x the batch floor (target 0.5x)"),
    ("lookups with ingest open loop at half its solo rate", f"p99 {lookup_p99:.1f} ms (target 20 ms)", f"ingest offered {runs[mixed]['by_kind'].get('ingest', {}).get('items_per_s', 0):,.0f} events/s"),
    ("lookups open loop at 2,000/s, same ingest", f"p99 {max(p99('open-lookups-ingest-at-half', k) for k in ('point', 'batch') if k in runs['open-lookups-ingest-at-half']['by_kind']):.1f} ms", f"ingest offered {runs['open-lookups-ingest-at-half']['by_kind'].get('ingest', {}).get('items_per_s', 0):,.0f} events/s"),
    ("durable ingest, 16 clients x 1,000 events", f"{ingest:,.0f} events/s (target 200 K)", f"{ingest / rate('store-floor'):.2f}x the store floor (target 0.5x)"),
    ("point lookups open loop at 25 K/s", f"p99 {p99('point-open-25k'):.1f} ms", f"{rate('point-open-25k'):,.0f}/s answered"),
    ("mixed 70/20/10, 50 clients", f"p99 {p99('mixed-70-20-10'):.1f} ms", f"{runs['mixed-70-20-10']['requests_per_s']:,.0f} requests/s"),
    ("rules mode, same node", f"point {rate('rules-point'):,.0f}/s, batch {rate('rules-batch'):,.0f} items/s", f"{rate('rules-batch') / rate('floor-batch'):.2f}x the batch floor"),
    ("floors", f"point {rate('floor-point'):,.0f}/s, batch {rate('floor-batch'):,.0f} items/s", f"store {rate('store-floor'):,.0f} events/s; Redis GET {rate('redis-get'):,.0f}/s"),
]
for row in rows:
    print(f"{row[0]:<52} {row[1]:<38} {row[2]}")
EOF
