"""WebRTC peer sessions: a publisher's (`ingest`), a viewer's (`viewer`), their tracks, SDP and
trickle ICE parsing, and every aiortc/aioice internal the node patches (`aiortc_adapter`). The
stream hub owns the sessions; nothing here reaches the engine or the encoder."""
