"""Media plumbing shared by every layer: frame conversions and the per-stream output fan-out."""
