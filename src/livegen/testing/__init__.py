"""Helpers shared by the tests and `livegen bench`: synthetic tracks, the delay stamp, and
loopback WHIP/WHEP clients built on real aiortc peers."""
