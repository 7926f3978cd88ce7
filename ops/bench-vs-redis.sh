#!/usr/bin/env bash
# Measures `stockgrid serve` with `stockgrid loadgen` beside Redis with `redis-benchmark`,
# on this machine, in one run (the README's figures come from here).
# Needs: a release build (cargo build --release) and Debian's redis-server / redis-tools.
set -euo pipefail
BIN=${BIN:-target/release/stockgrid}
PORT=${PORT:-50071}
REDIS_PORT=${REDIS_PORT:-6399}
DURATION=${DURATION:-10}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

echo "== redis-server (no persistence), redis-benchmark GET, 50 clients, unpipelined"
redis-server --port "$REDIS_PORT" --save "" --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
sleep 1
redis-benchmark -p "$REDIS_PORT" -t get -c 50 -n 500000 -q | tr "\r" "\n" | grep "requests per second"
redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true

echo "== stockgrid serve (embedded store, fsync per group commit)"
"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$work/data" >"$work/serve.log" 2>&1 &
sleep 2
lg() { "$BIN" loadgen --target "127.0.0.1:$PORT" --duration "$DURATION" "$@" 2>/dev/null; }
echo "-- point lookups, closed loop, 50 clients (preloads 100,000 pairs)"
lg --workload point --concurrency 50
echo "-- point lookups, open loop at 25,000/s (half the 50 K target)"
lg --workload point --concurrency 50 --rate 25000 --no-preload
echo "-- batch lookups of 100 items, closed loop, 16 clients"
lg --workload batch --concurrency 16 --no-preload
echo "-- durable ingest, 1,000 events per request, closed loop, 16 clients"
lg --workload ingest --concurrency 16 --no-preload
echo "-- mixed (70% point, 20% batch, 10% ingest), closed loop, 50 clients"
lg --workload mixed --concurrency 50 --no-preload
