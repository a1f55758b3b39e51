#!/usr/bin/env bash
# Records the watchcache server while a perf scenario runs and renders a flamegraph:
#   perf/flamegraph.sh fanout            -> perf/flamegraph-fanout.svg
# Arguments after the scenario's name go to it. For fanout, FANOUT_PEERS defaults to
# watchcache-embedded here (one watchcache process); the FANOUT_* sizes apply as usual.
# Builds with frame pointers in target/flamegraph (CARGO_TARGET_DIR), leaving target/ alone.
# Installs linux-perf (Debian) and inferno (crates.io) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bench="${1:-fanout}"
shift || true
command -v perf >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; }
command -v inferno-flamegraph >/dev/null 2>&1 || cargo install inferno --locked
export RUSTFLAGS="-C force-frame-pointers=yes"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/flamegraph}"
export FANOUT_PEERS="${FANOUT_PEERS:-watchcache-embedded}"
cargo bench --bench "$bench" --no-run
data="perf/perf-$bench.data"
# Software events only (cpu-clock): enough on virtual machines without PMU access. Children are
# followed, so every process the scenario starts is recorded.
perf record -e cpu-clock -F 999 -g -o "$data" -- cargo bench --bench "$bench" -- "$@"
# Worker threads carry tokio's names, not the binary's: find watchcache's processes by the name
# they were started with (their exec events), then keep every thread of those processes.
pids=$(perf script -i "$data" --show-task-events -F comm,pid 2>/dev/null \
  | awk '$1 == "watchcache" { print $2 }' | sort -un | paste -sd, -)
if [ -z "$pids" ]; then
  echo "no watchcache process in $data" >&2
  exit 1
fi
perf script -i "$data" --pid "$pids" \
  | inferno-collapse-perf \
  | inferno-flamegraph --title "watchcache: $bench" > "perf/flamegraph-$bench.svg"
echo "perf/flamegraph-$bench.svg (watchcache pids $pids)"
