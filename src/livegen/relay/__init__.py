"""Where a stream goes besides its WHEP viewers: pushed outputs (RTMP/RTMPS to platforms, WHIP to
SFUs, CDNs and other nodes) and recordings (fragmented MP4, uploaded to object storage).

Every output takes the stream's video as it was encoded once (H.264) and its audio as AAC
(encoded once per stream, for FLV and MP4) or as the publisher's Opus (for WHIP), through a
bounded queue of its own: a slow or stuck output drops its own backlog and resumes at a
keyframe, and never slows the stream, its viewers or the other outputs.
"""
