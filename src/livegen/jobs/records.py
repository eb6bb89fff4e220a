"""What the job store keeps, as the rest of the node sees it: a job (`JobRecord`) and its JSON in
the API, a webhook delivery (`Delivery`), a job being created (`NewJob`), the states, and the body
of a job's terminal event; the tables they are kept in.

Tables:
- `jobs`: one row per job. `seq` orders them (newest first in listings, the paging cursor); `id`
  is the public id. `owner` is who created it ("operator", "publish:<stream>", "anonymous"),
  with `idempotency_key` unique per owner and `request_hash` the SHA-256 of the canonical body,
  so a repeated POST finds its job. `spec` is the chain resolved when the job was accepted.
  State moves only through `JobStore`'s conditional updates, so a cancel and a finishing thread
  cannot overwrite each other.
- `deliveries`: one row per webhook event (a job's terminal state), written in the same
  transaction as that state. Its `body` is fixed when it is created and sent as is on every try.

States: queued → running → succeeded | failed | canceled; running → queued again after a
transient error (with `not_before`), when the node stops (graceful: the attempt is not counted),
or when a restarted node finds the job it was running (the attempt is counted).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from livegen.files.process import Progress

STATES = ("queued", "running", "succeeded", "failed", "canceled")
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
ERROR_KINDS = ("transient", "permanent")
DELIVERY_STATES = ("pending", "delivered", "failed")
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    idempotency_key TEXT,
    request_hash TEXT NOT NULL,
    request TEXT NOT NULL,
    spec TEXT NOT NULL,
    input TEXT NOT NULL,
    webhook_url TEXT,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    frames_done INTEGER NOT NULL DEFAULT 0,
    frames_total INTEGER,
    fps REAL,
    eta_s REAL,
    error_kind TEXT,
    error_message TEXT,
    output_bytes INTEGER,
    output_bucket TEXT,
    output_key TEXT,
    UNIQUE (owner, idempotency_key)
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, not_before, seq);
CREATE TABLE IF NOT EXISTS deliveries (
    event_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT,
    created REAL NOT NULL,
    next_try REAL NOT NULL,
    delivered REAL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_try);
CREATE INDEX IF NOT EXISTS deliveries_of_job ON deliveries (job_id);
"""


@dataclass(frozen=True)
class JobRecord:
    """One row of `jobs`, as stored."""

    seq: int
    id: str
    owner: str
    idempotency_key: str | None
    request_hash: str
    request: str
    spec: str
    input: str
    webhook_url: str | None
    state: str
    created: float
    updated: float
    started: float | None
    finished: float | None
    attempts: int
    not_before: float
    frames_done: int
    frames_total: int | None
    fps: float | None
    eta_s: float | None
    error_kind: str | None
    error_message: str | None
    output_bytes: int | None
    output_bucket: str | None
    output_key: str | None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def request_json(self) -> dict[str, Any]:
        return json.loads(self.request)

    def spec_json(self) -> dict[str, Any]:
        return json.loads(self.spec)

    def as_json(self, max_attempts: int | None = None) -> dict[str, Any]:
        """The job as the API shows it (without its deliveries; see `describe` in api.jobs)."""
        request = self.request_json()
        if self.state == "succeeded":
            progress = 1.0
        elif self.frames_total:
            progress = min(1.0, self.frames_done / self.frames_total)
        else:
            progress = 0.0
        output = None
        if self.state == "succeeded":
            output = {"url": f"/api/jobs/{self.id}/output", "bytes": self.output_bytes}
            if self.output_key is not None:
                output.update(bucket=self.output_bucket, key=self.output_key)
        return {
            "id": self.id,
            "state": self.state,
            "created": self.created,
            "updated": self.updated,
            "started": self.started,
            "finished": self.finished,
            "input": self.input,
            "preset": request.get("preset"),
            "effects": request.get("effects"),
            "params": request.get("params"),
            "chain": [effect["name"] for effect in self.spec_json().get("effects", [])],
            "progress": round(progress, 4),
            "frames_done": self.frames_done,
            "frames_total": self.frames_total,
            "fps": None if self.fps is None else round(self.fps, 2),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "attempts": self.attempts,
            "max_attempts": max_attempts,
            "next_attempt_at": self.not_before if self.state == "queued" and self.attempts else None,
            "error": None if self.error_kind is None else {"kind": self.error_kind, "message": self.error_message},
            "output": output,
        }


@dataclass(frozen=True)
class Delivery:
    """One row of `deliveries`: a webhook event and how its delivery goes."""

    event_id: str
    job_id: str
    url: str
    body: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created: float
    next_try: float
    delivered: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "state": self.state,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "next_try": self.next_try if self.state == "pending" else None,
            "delivered": self.delivered,
        }


@dataclass(frozen=True)
class NewJob:
    """What the API hands the store for a job it accepted."""

    owner: str
    idempotency_key: str | None
    request_hash: str
    request: dict[str, Any]
    spec: dict[str, Any]
    input: str
    webhook_url: str | None


JOB_ID = re.compile(r"[0-9a-f]{16}")


def new_job_id() -> str:
    return secrets.token_hex(8)


def event_body(event_id: str, job: JobRecord, now: float, max_attempts: int | None) -> str:
    """The webhook body of `job`'s terminal state: the same bytes on every try."""
    return json.dumps(
        {"id": event_id, "type": f"job.{job.state}", "created": now, "job": job.as_json(max_attempts)},
        separators=(",", ":"),
    )



def describe_progress(job: dict[str, Any], progress: Progress | None) -> dict[str, Any]:
    """`job` (a running job's JSON) with its live progress laid over the stored one."""
    if progress is None or job["state"] != "running":
        return job
    total = progress.frames_total
    job.update(
        frames_done=progress.frames_done,
        frames_total=total,
        fps=round(progress.fps, 2),
        eta_s=None if progress.eta_s is None else round(progress.eta_s, 1),
        progress=round(min(1.0, progress.frames_done / total), 4) if total else 0.0,
    )
    return job
