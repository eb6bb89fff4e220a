"""The stream hub: the registry of live streams and what each stream owns.

- `registry`: `StreamHub`, admission and the stream map (publish, watch, end, session ends).
- `stream`: `Stream`, a stream's pipeline, output, audio relay and sessions; `snapshot()`.
- `control`: live changes of a stream's effect chain (retune in place, or rebuild and swap).

The hub sits between the API and the parts it wires together: `rtc` (peer sessions), `engine`
(the device worker and pipelines) and `media` (encoding, audio relay). Outputs and recordings
of a stream hang off its `Stream`.
"""
