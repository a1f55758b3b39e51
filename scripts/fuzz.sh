#!/usr/bin/env bash
# Runs every cargo-fuzz target for the given number of seconds each (default 15); installs
# cargo-fuzz first if it is missing. Fails on the first crash.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-15}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
targets=(selectors patch query continue_token storage_key request_body storage_model cache_model
  protobuf_decode protobuf_roundtrip)
for target in "${targets[@]}"; do
  echo "fuzzing $target for ${seconds}s" >&2
  limits=()
  case "$target" in
    # The protobuf targets must not hang or allocate without bound: a run of one input past 10 s,
    # or one allocation of 64 MiB (inputs are a few KiB), is a crash.
    protobuf_*) limits=(-timeout=10 -malloc_limit_mb=64) ;;
    # The model targets and request_body keep one store (and runtime) across inputs, so every
    # input leaves memory behind by design: libFuzzer's per-input leak check would scan the heap
    # after each one. The store's threads also make the model targets' coverage vary between
    # runs of one input, on which the entropic schedule spends most of its time; the classic
    # schedule does not.
    storage_model | cache_model) limits=(-detect_leaks=0 -entropic=0) ;;
    request_body) limits=(-detect_leaks=0) ;;
  esac
  cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=4096 "${limits[@]}" >/dev/null 2>"fuzz/$target.log" || {
    tail -40 "fuzz/$target.log" >&2
    exit 1
  }
  grep -E "^Done|stat::number_of_executed_units" "fuzz/$target.log" | tail -1 >&2 || true
done
