#!/usr/bin/env bash
# Installs Debian's GStreamer WebRTC stack for the interop test (a non-aiortc WHIP publisher)
# when it is missing. Needs root and apt-get; elsewhere the interop test skips (fails in CI).
set -euo pipefail
PACKAGES="python3-gi python3-gst-1.0 gir1.2-gst-plugins-bad-1.0 gir1.2-nice-0.1 gstreamer1.0-nice
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
if /usr/bin/python3 -c "import gi; gi.require_version('GstWebRTC', '1.0'); gi.require_version('Nice', '0.1')" 2>/dev/null \
   && command -v gst-inspect-1.0 >/dev/null && gst-inspect-1.0 webrtcbin >/dev/null 2>&1 && gst-inspect-1.0 vp8enc >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's GStreamer WebRTC stack for the interop test"
  apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
else
  echo "GStreamer's WebRTC stack is not installed and cannot be installed here (needs root + apt-get);" \
       "the interop test will be skipped. Packages: $PACKAGES" >&2
fi
