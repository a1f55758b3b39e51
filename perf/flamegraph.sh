#!/usr/bin/env bash
# Records the watchcache server while a perf scenario runs and renders a flamegraph:
#   perf/flamegraph.sh fanout            -> perf/flamegraph-fanout.svg
# Installs linux-perf (Debian) and inferno (crates.io) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bench="${1:-fanout}"
shift || true
command -v perf >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; }
command -v inferno-flamegraph >/dev/null 2>&1 || cargo install inferno --locked
export RUSTFLAGS="-C force-frame-pointers=yes"
cargo build --release --bin watchcache
cargo bench --bench "$bench" --no-run
# Record every watchcache process the scenario starts, for as long as it runs.
perf record -e cpu-clock -F 999 -g -o "perf/perf-$bench.data" -- cargo bench --bench "$bench" -- "$@"
perf script -i "perf/perf-$bench.data" --comm watchcache \
  | inferno-collapse-perf \
  | inferno-flamegraph --title "watchcache: $bench" > "perf/flamegraph-$bench.svg"
echo "perf/flamegraph-$bench.svg"
