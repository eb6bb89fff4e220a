"""WebRTC signalling (WHIP/WHEP), peer sessions and the `SessionManager` that owns them."""
