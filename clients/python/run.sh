#!/usr/bin/env bash
# Generates a Python client from api/proto alone (grpcio-tools from PyPI, in a virtualenv),
# starts `stockgrid serve` on a free port with a temporary store, and runs client.py.
# Usage: clients/python/run.sh [path/to/stockgrid]   (default: target/release/stockgrid)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:-$root/target/release/stockgrid}
work=$(mktemp -d)
trap 'kill "${node:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet grpcio grpcio-tools grpcio-health-checking
"$work/venv/bin/python" -m grpc_tools.protoc -I "$root/api/proto" \
  --python_out="$work" --grpc_python_out="$work" "$root"/api/proto/stockgrid/v1/*.proto
"$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" 2>"$work/serve.log" &
node=$!
for _ in $(seq 100); do
  address=$(sed -n 's/^stockgrid serving on \([^ ]*\).*/\1/p' "$work/serve.log")
  [ -n "$address" ] && break
  sleep 0.1
done
[ -n "${address:-}" ] || { cat "$work/serve.log"; exit 1; }
PYTHONPATH="$work:$root/clients/python" "$work/venv/bin/python" "$root/clients/python/client.py" "$address"
