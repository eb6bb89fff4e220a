"""`JobStore`: file jobs and their webhook deliveries in SQLite (stdlib `sqlite3`).

One file (`<jobs.data_dir>/jobs.sqlite3`) in WAL mode with `synchronous=FULL`: every write is
committed, and on disk, before the call returns, so nothing the API acknowledged is lost when the
node is killed. One thread owns the connection (a single-thread executor); the event loop awaits
the store's methods and never touches the database itself.

Tables and states: see `jobs.records`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from livegen.jobs.records import (
    DELIVERY_STATES,
    SCHEMA,
    SCHEMA_VERSION,
    STATES,
    TERMINAL,
    Delivery,
    JobRecord,
    NewJob,
    event_body,
    new_job_id,
)

DB_NAME = "jobs.sqlite3"


class IdempotencyConflict(Exception):
    """The owner used this idempotency key before, for a different request body."""

    def __init__(self, job: JobRecord):
        super().__init__(job.id)
        self.job = job


T = TypeVar("T")
_JOB_COLUMNS = [f.name for f in fields(JobRecord)]
_DELIVERY_COLUMNS = [f.name for f in fields(Delivery)]


class JobStore:
    """See the module docstring. `open()` before use, `close()` at the end (both async)."""

    def __init__(self, data_dir: Path, *, clock: Callable[[], float] = time.time, max_attempts: int | None = None):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        self.max_attempts = max_attempts
        """Shown in each job's JSON (and so in webhook bodies)."""
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    # ---- life ----------------------------------------------------------------------------
    async def open(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="livegen-jobs-db")
        await self._call(self._open)

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._call(self._close)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("the job store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> None:
        if self._db is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before it is acknowledged
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        if db is None:
            raise RuntimeError("the job store is not open")
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _job(self, db: sqlite3.Connection, job_id: str) -> JobRecord | None:
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else JobRecord(**{k: row[k] for k in _JOB_COLUMNS})

    def _jobs(self, rows: Sequence[sqlite3.Row]) -> list[JobRecord]:
        return [JobRecord(**{k: row[k] for k in _JOB_COLUMNS}) for row in rows]

    # ---- jobs ----------------------------------------------------------------------------
    def _rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        assert self._db is not None
        return self._db.execute(sql, args).fetchall()

    async def _scalar(self, sql: str, *args: Any) -> Any:
        return (await self._call(self._rows, sql, *args))[0][0]

    async def find(self, owner: str, idempotency_key: str) -> JobRecord | None:
        rows = await self._call(self._rows, "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?", owner, idempotency_key)
        return self._jobs(rows)[0] if rows else None

    async def create(self, new: NewJob) -> tuple[JobRecord, bool]:
        """Insert a queued job; with an idempotency key the owner used before, the job made then
        and False (or `IdempotencyConflict` when that job's body differs)."""

        def create() -> tuple[JobRecord, bool]:
            now = self._clock()
            with self._tx() as db:
                if new.idempotency_key is not None:
                    row = db.execute(
                        "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?", (new.owner, new.idempotency_key)
                    ).fetchone()
                    if row is not None:
                        existing = self._jobs([row])[0]
                        if existing.request_hash != new.request_hash:
                            raise IdempotencyConflict(existing)
                        return existing, False
                job_id = new_job_id()
                db.execute(
                    "INSERT INTO jobs (id, owner, idempotency_key, request_hash, request, spec, input, webhook_url,"
                    " state, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                    (
                        job_id, new.owner, new.idempotency_key, new.request_hash,
                        json.dumps(new.request, sort_keys=True), json.dumps(new.spec, sort_keys=True),
                        new.input, new.webhook_url, now, now,
                    ),
                )
                job = self._job(db, job_id)
            assert job is not None
            return job, True

        return await self._call(create)

    async def get(self, job_id: str) -> JobRecord | None:
        rows = await self._call(self._rows, "SELECT * FROM jobs WHERE id = ?", job_id)
        return self._jobs(rows)[0] if rows else None

    async def page(
        self, *, owner: str | None = None, state: str | None = None, before: int | None = None, limit: int = 50
    ) -> list[JobRecord]:
        """Newest first; `owner` None: everyone's; `before`: only jobs older than that `seq`."""
        used = [(clause, value) for clause, value in (("owner = ?", owner), ("state = ?", state), ("seq < ?", before))
                if value is not None]
        where = f"WHERE {' AND '.join(clause for clause, _ in used)}" if used else ""
        args = [value for _, value in used]
        return self._jobs(await self._call(self._rows, f"SELECT * FROM jobs {where} ORDER BY seq DESC LIMIT ?", *args, limit))

    async def counts(self) -> dict[str, int]:
        """Jobs by state (every state, 0 when none)."""
        found = dict(await self._call(self._rows, "SELECT state, count(*) FROM jobs GROUP BY state"))
        return {state: int(found.get(state, 0)) for state in STATES}

    async def states(self, job_ids: Sequence[str]) -> dict[str, str]:
        """The state of each of `job_ids` that exists."""

        def states() -> dict[str, str]:
            assert self._db is not None
            found: dict[str, str] = {}
            for start in range(0, len(job_ids), 500):
                chunk = list(job_ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                found.update(self._db.execute(f"SELECT id, state FROM jobs WHERE id IN ({marks})", chunk).fetchall())
            return found

        return await self._call(states)

    async def claim(self, limit: int) -> list[JobRecord]:
        """Up to `limit` queued jobs that are due, oldest first, now `running` with one more
        attempt counted."""

        def claim() -> list[JobRecord]:
            now = self._clock()
            with self._tx() as db:
                ids = [
                    row[0]
                    for row in db.execute(
                        "SELECT id FROM jobs WHERE state = 'queued' AND not_before <= ? ORDER BY seq LIMIT ?",
                        (now, limit),
                    )
                ]
                for job_id in ids:
                    db.execute(
                        "UPDATE jobs SET state = 'running', attempts = attempts + 1, started = ?, updated = ?,"
                        " frames_done = 0, fps = NULL, eta_s = NULL WHERE id = ?",
                        (now, now, job_id),
                    )
                return [job for job_id in ids if (job := self._job(db, job_id)) is not None]

        return await self._call(claim)

    async def next_due(self) -> float | None:
        """When the earliest queued job may run (None: nothing queued)."""
        return await self._scalar("SELECT min(not_before) FROM jobs WHERE state = 'queued'")

    async def progress(
        self, job_id: str, frames_done: int, frames_total: int | None, fps: float | None, eta_s: float | None
    ) -> None:
        def progress() -> None:
            with self._tx() as db:
                db.execute(
                    "UPDATE jobs SET frames_done = ?, frames_total = ?, fps = ?, eta_s = ?, updated = ?"
                    " WHERE id = ? AND state = 'running'",
                    (frames_done, frames_total, fps, eta_s, self._clock(), job_id),
                )

        await self._call(progress)

    async def finish(
        self,
        job_id: str,
        state: str,
        *,
        from_states: Sequence[str] = ("running",),
        error_kind: str | None = None,
        error_message: str | None = None,
        output: dict[str, Any] | None = None,
    ) -> JobRecord | None:
        """Move the job to terminal `state` if it is in one of `from_states` (None otherwise: a
        cancel got there first, or it was already over), and queue its webhook in the same
        transaction. `output`: frames_done/frames_total/output_bytes/output_bucket/output_key."""
        assert state in TERMINAL, state

        def finish() -> JobRecord | None:
            now = self._clock()
            with self._tx() as db:
                marks = ",".join("?" * len(from_states))
                updates = {"state": state, "finished": now, "updated": now, "error_kind": error_kind,
                           "error_message": error_message, "eta_s": None, **(output or {})}
                assignments = ", ".join(f"{column} = ?" for column in updates)
                changed = db.execute(
                    f"UPDATE jobs SET {assignments} WHERE id = ? AND state IN ({marks})",
                    (*updates.values(), job_id, *from_states),
                ).rowcount
                if not changed:
                    return None
                job = self._job(db, job_id)
                assert job is not None
                self._queue_event(db, job, now)
            return job

        return await self._call(finish)

    def _queue_event(self, db: sqlite3.Connection, job: JobRecord, now: float) -> None:
        if job.webhook_url is None:
            return
        event_id = f"evt_{secrets.token_hex(12)}"
        db.execute(
            "INSERT INTO deliveries (event_id, job_id, url, body, state, created, next_try)"
            " VALUES (?, ?, ?, ?, 'pending', ?, ?)",
            (event_id, job.id, job.webhook_url, event_body(event_id, job, now, self.max_attempts), now, now),
        )

    async def retry_later(self, job_id: str, not_before: float, error_kind: str, error_message: str) -> bool:
        """A running job back to `queued` after a transient error, due at `not_before`."""

        def retry() -> bool:
            with self._tx() as db:
                return bool(db.execute(
                    "UPDATE jobs SET state = 'queued', not_before = ?, updated = ?, error_kind = ?, error_message = ?,"
                    " eta_s = NULL, fps = NULL WHERE id = ? AND state = 'running'",
                    (not_before, self._clock(), error_kind, error_message, job_id),
                ).rowcount)

        return await self._call(retry)

    async def requeue(self, job_id: str) -> bool:
        """A running job the node stopped (gracefully) back to `queued`: that attempt is not
        counted, it was not the job's fault."""

        def requeue() -> bool:
            with self._tx() as db:
                return bool(db.execute(
                    "UPDATE jobs SET state = 'queued', attempts = max(attempts - 1, 0), not_before = 0, updated = ?,"
                    " eta_s = NULL, fps = NULL WHERE id = ? AND state = 'running'",
                    (self._clock(), job_id),
                ).rowcount)

        return await self._call(requeue)

    async def cancel(self, job_id: str) -> tuple[str, JobRecord] | None:
        """Cancel a queued or running job: (its state before, the job now); None when there is no
        such job. A job already over is returned as it is."""

        def cancel() -> tuple[str, JobRecord] | None:
            now = self._clock()
            with self._tx() as db:
                job = self._job(db, job_id)
                if job is None:
                    return None
                if job.terminal:
                    return job.state, job
                db.execute(
                    "UPDATE jobs SET state = 'canceled', finished = ?, updated = ?, eta_s = NULL WHERE id = ?",
                    (now, now, job_id),
                )
                canceled = self._job(db, job_id)
                assert canceled is not None
                self._queue_event(db, canceled, now)
            return job.state, canceled

        return await self._call(cancel)

    async def expire(self, ended_before: float, limit: int = 500) -> list[str]:
        """Delete up to `limit` jobs that ended before `ended_before` and whose webhooks are all
        through (delivered or failed), with their deliveries; their ids (the runner removes
        their folders). Their idempotency keys may then be used again."""

        def expire() -> list[str]:
            with self._tx() as db:
                ids = [row["id"] for row in db.execute(
                    "SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'canceled') AND finished < ? AND NOT EXISTS"
                    " (SELECT 1 FROM deliveries d WHERE d.job_id = jobs.id AND d.state = 'pending') ORDER BY finished LIMIT ?",
                    (ended_before, limit),
                )]
                db.executemany("DELETE FROM deliveries WHERE job_id = ?", [(i,) for i in ids])
                db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in ids])
            return ids

        return await self._call(expire)

    async def recover(self, max_attempts: int) -> tuple[list[JobRecord], list[JobRecord]]:
        """At start: the jobs an earlier run left `running` (it stopped without putting them
        back: killed, crashed, power lost). Each goes back to `queued`, its attempt counted, or
        to `failed` (transient) when it has had `max_attempts`. (requeued, failed)."""

        def recover() -> tuple[list[JobRecord], list[JobRecord]]:
            now = self._clock()
            requeued, failed = [], []
            with self._tx() as db:
                for job in self._jobs(db.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall()):
                    if job.attempts >= max_attempts:
                        message = f"the node stopped while the job ran, {job.attempts} time(s) (jobs.max_attempts)"
                        db.execute(
                            "UPDATE jobs SET state = 'failed', finished = ?, updated = ?, error_kind = 'transient',"
                            " error_message = ?, eta_s = NULL WHERE id = ?",
                            (now, now, message, job.id),
                        )
                        done = self._job(db, job.id)
                        assert done is not None
                        self._queue_event(db, done, now)
                        failed.append(done)
                    else:
                        db.execute(
                            "UPDATE jobs SET state = 'queued', not_before = 0, updated = ?, error_kind = 'transient',"
                            " error_message = 'the node stopped while the job ran', eta_s = NULL, fps = NULL"
                            " WHERE id = ?",
                            (now, job.id),
                        )
                        requeued.append(job)
            return requeued, failed

        return await self._call(recover)

    # ---- deliveries ----------------------------------------------------------------------
    def _deliveries(self, rows: Sequence[sqlite3.Row]) -> list[Delivery]:
        return [Delivery(**{k: row[k] for k in _DELIVERY_COLUMNS}) for row in rows]

    async def deliveries(self, job_ids: Sequence[str]) -> dict[str, list[Delivery]]:
        """The deliveries of each of `job_ids`, oldest first."""

        def deliveries() -> dict[str, list[Delivery]]:
            assert self._db is not None
            found: dict[str, list[Delivery]] = {job_id: [] for job_id in job_ids}
            for start in range(0, len(job_ids), 500):
                chunk = list(job_ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT * FROM deliveries WHERE job_id IN ({marks}) ORDER BY created", chunk
                ).fetchall()
                for delivery in self._deliveries(rows):
                    found[delivery.job_id].append(delivery)
            return found

        return await self._call(deliveries)

    async def due_deliveries(self, limit: int, exclude: Sequence[str] = ()) -> list[Delivery]:
        def due() -> list[Delivery]:
            assert self._db is not None
            marks = ",".join("?" * len(exclude))
            skip = f" AND event_id NOT IN ({marks})" if exclude else ""
            rows = self._db.execute(
                f"SELECT * FROM deliveries WHERE state = 'pending' AND next_try <= ?{skip} ORDER BY next_try LIMIT ?",
                (self._clock(), *exclude, limit),
            ).fetchall()
            return self._deliveries(rows)

        return await self._call(due)

    async def next_delivery(self) -> float | None:
        return await self._scalar("SELECT min(next_try) FROM deliveries WHERE state = 'pending'")

    async def delivery_tried(
        self,
        event_id: str,
        *,
        state: str,
        last_status: int | None,
        last_error: str | None,
        next_try: float,
    ) -> None:
        """Record one try of a delivery: its outcome and, while pending, when the next is due."""
        assert state in DELIVERY_STATES, state

        def tried() -> None:
            now = self._clock()
            with self._tx() as db:
                db.execute(
                    "UPDATE deliveries SET state = ?, attempts = attempts + 1, last_status = ?, last_error = ?,"
                    " next_try = ?, delivered = ? WHERE event_id = ?",
                    (state, last_status, last_error, next_try, now if state == "delivered" else None, event_id),
                )

        await self._call(tried)
