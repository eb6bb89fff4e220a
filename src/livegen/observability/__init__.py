"""Measurements every layer may record into: latency windows (metrics and samplers come later)."""
