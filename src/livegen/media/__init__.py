"""Media plumbing below the effects: frame conversions, the per-stream encoder and output fan-out, the audio relay, assets and a looping background video."""
