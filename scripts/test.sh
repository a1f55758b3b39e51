#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the storage conformance suite on every backend (a real
# etcd included), the crash test and the end-to-end tests of the binary. Installs what is
# missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --with-etcd
cargo test --workspace "$@"
