"""The frame engine: latest-frame-wins slots, one worker thread per device, per-stream pipelines."""
