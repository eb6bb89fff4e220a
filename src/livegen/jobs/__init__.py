"""File jobs: a video (an upload or an object in storage) run through an effect chain inside the
node, below the live streams, with its state in SQLite so that a restarted node finds it again.

`store` keeps jobs and webhook deliveries (SQLite, one thread owns the connection), `runner`
claims and runs jobs and retries transient failures, `webhooks` delivers the terminal events,
`storage` reads inputs from and writes outputs to object storage, `metrics` exposes them.
"""
