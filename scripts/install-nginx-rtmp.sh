#!/usr/bin/env bash
# Installs Debian's nginx and its RTMP module (libnginx-mod-rtmp) when missing: the
# RTMP output tests push to an nginx-rtmp they start themselves (tests/nginx_rtmp.py) on a free
# 127.0.0.1 port. Needs root and apt-get; elsewhere it says what to install and those tests skip
# (in CI, where CI=true, they fail).
set -euo pipefail
module=/usr/lib/nginx/modules/ngx_rtmp_module.so
if { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } && [ -e "$module" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's nginx and libnginx-mod-rtmp for the RTMP tests"
  apt-get update -qq
  # policy-rc.d: the packages' post-install must not start an nginx server in a container or on
  # a CI runner; the tests run their own, with their own config.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT  # also when the install fails
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx libnginx-mod-rtmp >/dev/null
  nginx -v
  test -e "$module"
else
  echo "nginx with the RTMP module is not installed and cannot be installed here (needs root + apt-get);" \
       "the RTMP output tests will be skipped. Install Debian's nginx and libnginx-mod-rtmp." >&2
fi
