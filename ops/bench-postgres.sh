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
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
work=$(mktemp -d)
results="$work/results.jsonl"
pg_pid=
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    if [ -n "$pg_pid" ]; then
        kill -INT "$pg_pid" 2>/dev/null || true
        wait "$pg_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

record() { # label, then the JSON line on stdin
    local line
    line=$(cat)
    echo "$1 $line"
    python3 -c 'import json,sys; v=json.loads(sys.argv[2]); v["label"]=sys.argv[1]; print(json.dumps(v))' "$1" "$line" >>"$results"
}
lg() { "$BIN" loadgen --duration "$DURATION" --json "$@" 2>>"$work/loadgen.log"; }
floor() { # the loadgen floors, their progress kept for a failure
    "$BIN" loadgen --events "$EVENTS" --json "$@" 2>>"$work/loadgen.log" || {
        cat "$work/loadgen.log" >&2
        return 1
    }
}
wait_serving() {
    for _ in $(seq 1 120); do
        "$BIN" loadgen --target "127.0.0.1:$1" --workload point --concurrency 1 --duration 1 \
            --no-preload --json 2>/dev/null | grep -q '"errors":0,' && return 0
        sleep 0.5
    done
    echo "the node on port $1 did not start serving" >&2
    return 1
}

echo "== a private PostgreSQL ($PGBIN)"
as_user=()
if [ "$(id -u)" -eq 0 ]; then
    owner=postgres
    id postgres >/dev/null 2>&1 || owner=nobody
    chown "$owner" "$work"
    as_user=(runuser -u "$owner" --)
fi
password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
echo "$password" >"$work/password"
[ "${#as_user[@]}" -gt 0 ] && chown "$owner" "$work/password"
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_user[@]}" "$PGBIN/initdb" -D "$work/pg" -U stockgrid --auth-local=trust \
    --auth-host=scram-sha-256 --pwfile="$work/password" -E UTF8 --locale=C >/dev/null
"${as_user[@]}" "$PGBIN/postgres" -D "$work/pg" -p "$pg_port" -k "$work" \
    -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c max_wal_size=4GB \
    >"$work/pg.log" 2>&1 &
pg_pid=$!
for _ in $(seq 1 100); do
    "$PGBIN/pg_isready" -h 127.0.0.1 -p "$pg_port" -q && break
    sleep 0.1
done
export PGPASSWORD=$password
for database in raw store node; do
    "$PGBIN/createdb" -h 127.0.0.1 -p "$pg_port" -U stockgrid "$database"
done
url() { echo "postgres://stockgrid@127.0.0.1:$pg_port/$1"; }

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
