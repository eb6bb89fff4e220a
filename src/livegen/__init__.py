"""livegen: a live-stream video effects node (WebRTC in, real-time effects, WebRTC out)."""

__version__ = "0.1.0"
