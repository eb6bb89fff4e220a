#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests when it is missing. Needs root and apt-get;
# elsewhere it says what to install and the browser tests skip (in CI, where CI=true, they fail).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -n "${LIVEGEN_CHROMIUM:-}" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's chromium for the browser tests"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
else
  echo "chromium is not installed and cannot be installed here (needs root + apt-get);" \
       "the browser tests will be skipped. Install it, or point LIVEGEN_CHROMIUM at a Chromium." >&2
fi
