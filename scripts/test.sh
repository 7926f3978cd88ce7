#!/usr/bin/env bash
# The README's test command: installs what the tests need and is missing on a fresh Debian
# machine (PostgreSQL's server programs, which the tests start privately in temporary
# directories; libclang-dev, with which the FoundationDB backend type-checks; iproute2, with
# which a grid test cuts a node off in a network name space), then runs every
# test of the workspace and checks that the FoundationDB backend compiles.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
# The grid's network cut test makes a network name space with `ip` (and needs root).
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing ${missing[*]} (Debian packages)"
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "error: ${missing[*]} missing and neither root nor sudo to install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "== cargo test --workspace"
cargo test --workspace --locked "$@"

echo "== cargo check -p stockgrid-storage --features fdb (the FoundationDB backend compiles)"
cargo check -p stockgrid-storage --features fdb --all-targets --locked
if [ -n "${FDB_CLUSTER_FILE:-}" ]; then
    echo "== the conformance suite on the FoundationDB cluster of $FDB_CLUSTER_FILE"
    cargo test -p stockgrid-storage --features fdb --locked --test conformance_fdb -- --nocapture
else
    echo "== FoundationDB conformance: NOT RUN: FDB_CLUSTER_FILE is not set (no FoundationDB"
    echo "   client or cluster on this machine); its logic ran above against the fake database"
fi
