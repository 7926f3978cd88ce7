#!/usr/bin/env bash
# Durable ingest through PostgreSQL beside what PostgreSQL alone absorbs for the same rows,
# and beside the embedded store, on this machine, in one run: docs/measurements.md's
# PostgreSQL figures come from here.
#
#   - postgres-floor: PostgreSQL alone writing the rows a durable ingest writes (recorded
#     from the real engine): each batch one plain transaction, an `unnest` upsert, a
#     connection per shard (`stockgrid loadgen --postgres-floor`);
#   - store-floor-postgres: the same batches through the store's PostgreSQL backend and the
#     group committer (SERIALIZABLE, commit ids; `loadgen --store-floor postgres://...`);
#   - ingest-postgres: `stockgrid serve --store postgres://...`, 16 clients x 1,000 events;
#   - store-floor-embedded and ingest-embedded: the same on the embedded store.
#
# PostgreSQL is a private server (Debian's postgresql: initdb in a temporary directory, a
# free port, run as the postgres user under root), with its defaults but for
# shared_buffers=256MB and max_wal_size=4GB, fsync and synchronous_commit on. Needs a release
# build (cargo build --release) and python3.
set -euo pipefail
BIN=${BIN:-target/release/stockgrid}
PORT=${PORT:-50081}
DURATION=${DURATION:-8}
EVENTS=${EVENTS:-400000}
work=$(mktemp -d)
# shellcheck source=ops/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"
floor() { # the loadgen floors, their progress kept for a failure
    "$BIN" loadgen --events "$EVENTS" --json "$@" 2>>"$work/loadgen.log" || {
        cat "$work/loadgen.log" >&2
        return 1
    }
}
start_postgres raw store node

echo "== PostgreSQL alone, the same rows"
floor --postgres-floor "$(url raw)" | record postgres-floor
echo "== the store's PostgreSQL backend alone, the same batches"
floor --store-floor "$(url store)" | record store-floor-postgres
echo "== a node on PostgreSQL: durable ingest, 16 clients x 1,000 events"
"$BIN" serve --listen "127.0.0.1:$PORT" --store "$(url node)" >"$work/serve-pg.log" 2>&1 &
serve=$!
wait_serving "$PORT"
lg --target "127.0.0.1:$PORT" --workload ingest --concurrency 16 --no-preload | record ingest-postgres
kill "$serve"
wait "$serve" || true

echo "== the embedded store alone, the same batches"
floor --store-floor "$work/store-floor" | record store-floor-embedded
echo "== a node on the embedded store: durable ingest, 16 clients x 1,000 events"
"$BIN" serve --listen "127.0.0.1:$PORT" --store "$work/data" >"$work/serve-embedded.log" 2>&1 &
serve=$!
wait_serving "$PORT"
lg --target "127.0.0.1:$PORT" --workload ingest --concurrency 16 --no-preload | record ingest-embedded
kill "$serve"
wait "$serve" || true

echo "== summary"
python3 - "$results" <<'EOF'
import json, sys
runs = {}
for line in open(sys.argv[1]):
    value = json.loads(line)
    runs[value["label"]] = value
def rate(label):
    return runs[label]["items_per_s"]
rows = [
    ("durable ingest on PostgreSQL", f"{rate('ingest-postgres'):,.0f} events/s",
     f"{rate('ingest-postgres') / rate('postgres-floor'):.2f}x PostgreSQL alone (target 0.5x)"),
    ("", "", f"{rate('ingest-postgres') / rate('store-floor-postgres'):.2f}x its backend alone"),
    ("PostgreSQL alone, the same rows", f"{rate('postgres-floor'):,.0f} events/s", ""),
    ("the PostgreSQL backend alone, the same batches", f"{rate('store-floor-postgres'):,.0f} events/s",
     f"{rate('store-floor-postgres') / rate('postgres-floor'):.2f}x PostgreSQL alone"),
    ("durable ingest on the embedded store", f"{rate('ingest-embedded'):,.0f} events/s",
     f"{rate('ingest-embedded') / rate('store-floor-embedded'):.2f}x its store alone"),
    ("the embedded store alone", f"{rate('store-floor-embedded'):,.0f} events/s", ""),
]
for row in rows:
    print(f"{row[0]:<48} {row[1]:<22} {row[2]}")
EOF
