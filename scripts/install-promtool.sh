#!/usr/bin/env bash
# Installs Debian's `prometheus` package for its promtool when promtool is missing: the metrics
# tests check the alert rules with `promtool check rules` and `promtool test rules`. Needs root
# and apt-get; elsewhere it says what to install and those tests skip (in CI, where CI=true,
# they fail).
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's prometheus package for promtool"
  apt-get update -qq
  # policy-rc.d: the package's post-install must not start a Prometheus server in a container
  # or on a CI runner; only the promtool binary is wanted.
  policy=/usr/sbin/policy-rc.d
  created=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ -n "$created" ]; then rm -f "$policy"; fi
  promtool --version | head -1
else
  echo "promtool is not installed and cannot be installed here (needs root + apt-get);" \
       "the alert-rule tests will be skipped. Install Debian's prometheus package or put promtool on PATH." >&2
fi
