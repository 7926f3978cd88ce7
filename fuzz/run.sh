#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation (stable Rust: the same
# flags cargo-fuzz passes, without a sanitizer) and runs each for SECONDS (default 50).
# A crash leaves its input in fuzz/artifacts/TARGET/ and fails the run.
#
#   fuzz/run.sh [SECONDS] [TARGET ...]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-50}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(event_validation request_conversions)
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# An explicit --target keeps the instrumentation off build scripts and proc macros (they
# run in the compiler, without libFuzzer), as cargo-fuzz does.
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --locked --bins --target "$host"
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  echo "== fuzz $target for ${seconds}s"
  log="artifacts/$target/last-run.log"
  if ! "target/$host/release/$target" -max_total_time="$seconds" -rss_limit_mb=4096 \
      -artifact_prefix="artifacts/$target/" "corpus/$target" > "$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz $target found a crash; its input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "INFO: Loaded 1 modules|^Done" "$log" || true
done
