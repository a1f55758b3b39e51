#!/usr/bin/env bash
# Installs the system packages watchcache needs and a fresh machine lacks:
#   protobuf-compiler  (protoc, for etcd-client's build)
#   etcd-server        (only with --with-etcd: the real etcd the tests and benchmarks run against)
# Both are Debian packages. Does nothing when they are already there.
set -euo pipefail
need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if [ "${1:-}" = "--with-etcd" ]; then
  command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
fi
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing: ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
