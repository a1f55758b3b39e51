#!/usr/bin/env bash
# Builds watchcache (release) and runs `watchcache serve` with the given flags; with none, it
# serves on 127.0.0.1:8080 from the durable embedded store in ./watchcache-data.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --bin watchcache
exec target/release/watchcache serve "$@"
