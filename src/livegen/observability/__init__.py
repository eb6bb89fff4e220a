"""Measurements every layer records into: latency windows and histograms (`latency`, `metrics`),
the Prometheus collector (`metrics`), GPU readings (`gpu`) and sampled output quality (`quality`)."""
