#!/usr/bin/env bash
# Installs Debian's redis-server when missing: the cluster tests (tests/test_cluster.py) start
# their own redis-server on a free 127.0.0.1 port, in a temporary folder, without persistence.
# Needs root and apt-get; elsewhere it says what to install and those tests skip (in CI, where
# CI=true, they fail).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's redis-server for the cluster tests"
  apt-get update -qq
  # policy-rc.d: the package's post-install must not start a Redis server in a container or on
  # a CI runner; the tests run their own, on their own port.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT  # also when the install fails
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  redis-server --version
else
  echo "redis-server is not installed and cannot be installed here (needs root + apt-get);" \
       "the cluster tests will be skipped. Install Debian's redis-server." >&2
fi
