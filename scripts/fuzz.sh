#!/usr/bin/env bash
# Runs every cargo-fuzz target for the given number of seconds each (default 15); installs
# cargo-fuzz first if it is missing. Fails on the first crash.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-15}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in selectors patch storage_model cache_model protobuf_decode protobuf_roundtrip; do
  echo "fuzzing $target for ${seconds}s" >&2
  # The protobuf targets must not hang or allocate without bound: a run of one input past 10 s,
  # or one allocation of 64 MiB (inputs are a few KiB), is a crash.
  limits=()
  case "$target" in
    protobuf_*) limits=(-timeout=10 -malloc_limit_mb=64) ;;
  esac
  cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=4096 "${limits[@]}" >/dev/null 2>"fuzz/$target.log" || {
    tail -40 "fuzz/$target.log" >&2
    exit 1
  }
  grep -E "^Done|stat::number_of_executed_units" "fuzz/$target.log" | tail -1 >&2 || true
done
