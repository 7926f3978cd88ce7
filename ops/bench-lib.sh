# Helpers the benchmark scripts of ops/ share (sourced, not run): a private PostgreSQL
# server, loadgen runs recorded as JSON lines, and waiting for a node to serve.
#
# The sourcing script sets BIN (the stockgrid binary), DURATION (seconds per loadgen run) and
# `work` (a temporary directory, removed by `cleanup` on exit), and calls `start_postgres`
# before using `url`.

results="$work/results.jsonl"
pg_pid=
cleanup() {
    local status=$?
    kill $(jobs -p) 2>/dev/null || true
    if { [ "$status" -ne 0 ] || [ -n "${KEEP_LOGS:-}" ]; } && [ -d "$work" ]; then
        # Keep the logs of a failed run (or of any run, with KEEP_LOGS set).
        kept=$(mktemp -d)
        cp "$work"/*.log "$kept"/ 2>/dev/null || true
        echo "the run failed; its logs are in $kept" >&2
    fi
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
wait_serving() {
    for _ in $(seq 1 120); do
        "$BIN" loadgen --target "127.0.0.1:$1" --workload point --concurrency 1 --duration 1 \
            --no-preload --json 2>/dev/null | grep -q '"errors":0,' && return 0
        sleep 0.5
    done
    echo "the node on port $1 did not start serving" >&2
    return 1
}

# A private PostgreSQL (Debian's postgresql: initdb in $work, a free port, run as the postgres
# user under root), with its defaults but for shared_buffers=256MB and max_wal_size=4GB, fsync
# and synchronous_commit on; creates the databases named as arguments and exports PGPASSWORD.
start_postgres() {
    local pgbin=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
    echo "== a private PostgreSQL ($pgbin)"
    local as_user=() owner
    if [ "$(id -u)" -eq 0 ]; then
        owner=postgres
        id postgres >/dev/null 2>&1 || owner=nobody
        chown "$owner" "$work"
        as_user=(runuser -u "$owner" --)
    fi
    local password
    password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    echo "$password" >"$work/password"
    [ "${#as_user[@]}" -gt 0 ] && chown "$owner" "$work/password"
    pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${as_user[@]}" "$pgbin/initdb" -D "$work/pg" -U stockgrid --auth-local=trust \
        --auth-host=scram-sha-256 --pwfile="$work/password" -E UTF8 --locale=C >/dev/null
    "${as_user[@]}" "$pgbin/postgres" -D "$work/pg" -p "$pg_port" -k "$work" \
        -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c max_wal_size=4GB \
        >"$work/pg.log" 2>&1 &
    pg_pid=$!
    for _ in $(seq 1 100); do
        "$pgbin/pg_isready" -h 127.0.0.1 -p "$pg_port" -q && break
        sleep 0.1
    done
    export PGPASSWORD=$password
    local database
    for database in "$@"; do
        "$pgbin/createdb" -h 127.0.0.1 -p "$pg_port" -U stockgrid "$database"
    done
}
url() { echo "postgres://stockgrid@127.0.0.1:$pg_port/$1"; }
