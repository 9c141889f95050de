#!/usr/bin/env bash
# make demo: etcd, Redis, versitygw (if installed), wasim and three nodes on
# loopback with data under ./demo_data, a few linked profiles, and a guide
# printed to the terminal. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
export AMARULA_TOOLS_BIN="${AMARULA_TOOLS_BIN:-$PWD/.tools/bin}"
export AMARULA_BIN_DIR="${AMARULA_BIN_DIR:-$PWD/bin}"
GO="${GO:-go}"
[ -x bin/amarula-node ] || "$GO" build -o bin/amarula-node ./cmd/node
[ -x bin/wasim ] || "$GO" build -o bin/wasim ./cmd/wasim
"$GO" build -o bin/amarula-demo ./cmd/amarula-demo
exec bin/amarula-demo "$@"
