"""The hand-offs and threads every stage of the node is built from.

- `slot`: `FrameSlot`, a thread-safe hand-off of size one (newest wins) between two threads.
- `mailbox`: `Mailbox`, a bounded queue on the asyncio loop with counted drops.
- `stage`: `ThreadStage`, a named thread with start, stop, wake and error handling.

Nothing here knows about video: these are the shapes that keep the node live (bounded, newest
first) rather than a queue. Imports nothing else of livegen, so any package may use it.
"""
