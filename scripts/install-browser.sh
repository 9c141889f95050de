#!/usr/bin/env bash
# Installs Debian's chromium for the dashboard's browser test
# (dashboard/browser_test.go). Idempotent: nothing happens when it is present.
# Tests never install anything themselves; `make test` calls this script.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium present)"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-browser: apt-get install chromium (a few minutes the first time)"
$sudo apt-get update -qq
# Fonts so that screenshots show text, not boxes.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "install-browser: $(/usr/bin/chromium --version)"
