#!/usr/bin/env bash
# Installs what the integration tests need: redis-server and etcd from
# Debian, versitygw (S3) from the Go module proxy into .tools/bin.
# Idempotent: anything already present is left alone.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools/bin"
mkdir -p "$tools"

need_apt=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need_apt+=(redis-server)
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || need_apt+=(etcd-server)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-test-deps: apt-get install ${need_apt[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian may start the packaged services; the tests start their own.
  $sudo service redis-server stop >/dev/null 2>&1 || true
  $sudo service etcd stop >/dev/null 2>&1 || true
fi

if [ ! -x "$tools/versitygw" ]; then
  echo "install-test-deps: go install versitygw@v1.8.0 (takes a minute the first time)"
  GOBIN="$tools" go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
fi
echo "install-test-deps: redis-server $(redis-server --version | awk '{print $3}'), $(etcd --version | head -1), versitygw at $tools/versitygw"
