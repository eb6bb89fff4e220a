"""The frame engine: one worker thread per device, per-stream pipelines, presets and stats."""
