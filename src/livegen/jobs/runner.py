"""`JobRunner`: claims queued file jobs from the store and runs them, `jobs.concurrency` at once,
on the node's device worker below the live streams (`files.process` opens a job lane there).

Owned by the app: `start()` takes up what an earlier run left, if it left a job database (running
jobs back to queued with their attempt counted, or failed after `jobs.max_attempts`; leftover
files of jobs that ended removed) and starts dispatching and webhook delivery; without one, the
database and the folder are made when the first job is posted (`opened`), so a node that never
runs a job writes nothing; `stop()` stops every running
job's thread (within about a second: `files.process` checks its cancel event between frames),
puts those jobs back to `queued` without counting the attempt, and closes the store.

A job runs on a thread of the runner's pool: its input is resolved (an uploaded video, or
fetched from object storage into the job's folder), its chain built, the file processed into
`<data_dir>/<job id>/output.mp4` (written atomically), and, with object storage, the output
uploaded. A failed attempt is `permanent` (the job fails at once) or `transient` (see
`jobs.failures`): a transient one sends the job back to `queued`, to run again after a backoff
with full jitter (`jobs.retry_base_s` .. `retry_cap_s`), until `jobs.max_attempts` tries have
failed; then it is `failed` (kind transient). A node killed mid-job counts as a transient
failure of that attempt; a node stopped gracefully does not count it.
A canceled job stops within a second; its folder (partial output, fetched input) is removed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livegen.config import JobSettings, PresetSpec
from livegen.engine.presets import PresetLibrary
from livegen.engine.worker import DeviceWorker
from livegen.errors import LivegenError
from livegen.files.process import (
    FileError,
    ProcessCanceled,
    Progress,
    frames_expected,
    open_input,
    process_file,
)
from livegen.flow.backoff import Backoff
from livegen.jobs.failures import EXPECTED_ERRORS, error_kind, error_text
from livegen.jobs.metrics import JobMetrics
from livegen.jobs.records import JOB_ID, JobRecord
from livegen.jobs.storage import JobStorage
from livegen.jobs.store import JobStore
from livegen.jobs.webhooks import WebhookSender
from livegen.media.assets import UPLOAD_REF, AssetStore

log = logging.getLogger(__name__)

OUTPUT_NAME = "output.mp4"
PROGRESS_EVERY_S = 1.0
"""How often a running job's progress is written to the store (it is read live in between)."""
STOP_WAIT_S = 10.0
CANCEL_WAIT_S = 5.0


class Stopping(Exception):
    """The node is stopping: the job goes back to the queue."""


@dataclass
class ActiveJob:
    """A job a thread of this runner is running now."""

    job: JobRecord
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None
    """Why `cancel` was set: "canceled" (DELETE) or "stopping" (the node)."""
    progress: Progress | None = None
    saved_at: float = 0.0
    saved_frames: int = -1
    task: asyncio.Task[None] | None = None

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.cancel.set()


@dataclass(frozen=True)
class Outcome:
    output_bytes: int
    frames_done: int
    frames_total: int | None
    bucket: str | None = None
    key: str | None = None


class JobRunner:
    def __init__(
        self,
        settings: JobSettings,
        worker: DeviceWorker,
        presets: PresetLibrary,
        assets: AssetStore,
        storage: JobStorage | None = None,
        *,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ):
        self.settings = settings
        self.worker = worker
        self.presets = presets
        self.assets = assets
        self.storage = storage
        self.data_dir = Path(settings.data_dir)
        self.store = JobStore(self.data_dir, clock=clock, max_attempts=settings.max_attempts)
        self.metrics = JobMetrics()
        self.webhooks = WebhookSender(
            self.store, settings, clock=clock, on_outcome=self.metrics.webhook_outcome,
            rng=lambda: self.rng(),
        )
        self._clock = clock
        self.rng = rng
        """Where the backoffs' jitter comes from (jobs' and webhooks'); tests may pin it."""
        self._active: dict[str, ActiveJob] = {}
        self._threads: ThreadPoolExecutor | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._open = False
        self._open_lock = asyncio.Lock()
        self._next_expiry = 0.0
        self.counts: dict[str, int] = {}
        """Jobs by state, refreshed after each change (what metrics read at scrape time)."""

    # ---- the owner ------------------------------------------------------------------------
    async def start(self) -> None:
        """Take up an earlier run's jobs, if it left a job database; without one nothing is
        written until the first job is posted (`opened(create=True)`)."""
        self._stopping = False
        self._wake = asyncio.Event()
        self._open_lock = asyncio.Lock()
        await self.opened(create=False)

    async def opened(self, *, create: bool) -> bool:
        """Whether the store is open, opening it first when its database exists (or `create`).
        A node that never runs a job leaves no database and no folder behind."""
        async with self._open_lock:
            if self._open:
                return True
            if self._stopping or not (create or await asyncio.to_thread(self.store.path.exists)):
                return False
            await self._take_up()
            self._open = True
            return True

    async def _take_up(self) -> None:
        await self.store.open()
        requeued, failed = await self.store.recover(self.settings.max_attempts)
        for job in requeued:
            log.warning("job %s: the node stopped while it ran (attempt %d); queued again", job.id, job.attempts)
        for job in failed:
            log.error("job %s failed: %s", job.id, job.error_message)
            self.metrics.failed("transient")
        await self._sweep([job.id for job in requeued])
        await self._refresh_counts()
        self._threads = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="livegen-job")
        self._dispatcher = asyncio.create_task(self._dispatch(), name="livegen-jobs")
        self.webhooks.start()

    async def stop(self) -> None:
        """Stop dispatching, stop running jobs (back to `queued`), stop webhooks, close the store."""
        self._stopping = True
        self._wake.set()
        async with self._open_lock:
            was_open, self._open = self._open, False
        if was_open:
            await self._wind_down()
        if self.storage is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.storage.close)
        if was_open:
            await self.store.close()

    async def _wind_down(self) -> None:
        if self._dispatcher is not None:
            await self._dispatcher
            self._dispatcher = None
        for active in list(self._active.values()):
            active.stop("stopping")
        tasks = [a.task for a in self._active.values() if a.task is not None]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
            for task in pending:
                log.error("%s did not stop within %.0f s", task.get_name(), STOP_WAIT_S)
                task.cancel()
        await self.webhooks.stop()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None

    # ---- what the API asks ----------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def live_progress(self, job_id: str) -> Progress | None:
        """The latest progress of a job running now (fresher than the store's)."""
        active = self._active.get(job_id)
        return active.progress if active is not None else None

    async def cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a queued or running job; a running one is stopped (and its files removed)
        before this returns, or within `CANCEL_WAIT_S`. None: no such job."""
        found = await self.store.cancel(job_id)
        if found is None:
            return None
        before, job = found
        if before in ("queued", "running"):
            log.info("job %s canceled (it was %s)", job_id, before)
            self.webhooks.wake()
            active = self._active.get(job_id)
            if active is not None:
                active.stop("canceled")
                if active.task is not None:
                    await asyncio.wait([active.task], timeout=CANCEL_WAIT_S)
            else:
                await self._remove_files(job_id)
            await self._refresh_counts()
        return job

    def job_dir(self, job_id: str) -> Path:
        return self.data_dir / job_id

    def output_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / OUTPUT_NAME

    # ---- dispatching ----------------------------------------------------------------------
    async def _dispatch(self) -> None:
        while not self._stopping:
            self._wake.clear()
            wait = 1.0
            try:
                free = self.settings.concurrency - len(self._active)
                if free > 0:
                    claimed = await self.store.claim(free)
                    for job in claimed:
                        self._launch(job)
                    if claimed:
                        await self._refresh_counts()
                await self._save_progress()
                await self._expire()
                due = await self.store.next_due()
                if due is not None and len(self._active) < self.settings.concurrency:
                    wait = min(wait, max(0.01, due - self._clock()))
            except Exception:
                log.exception("job dispatch failed; trying again")
            if self._stopping:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    def _launch(self, job: JobRecord) -> None:
        active = ActiveJob(job)
        self._active[job.id] = active
        active.task = asyncio.create_task(self._run(active), name=f"livegen-job-{job.id}")
        log.info("job %s started (attempt %d of %d)", job.id, job.attempts, self.settings.max_attempts)

    async def _save_progress(self) -> None:
        now = time.monotonic()
        for active in list(self._active.values()):
            progress = active.progress
            if progress is None or progress.frames_done == active.saved_frames or now - active.saved_at < PROGRESS_EVERY_S:
                continue
            active.saved_at, active.saved_frames = now, progress.frames_done
            await self.store.progress(
                active.job.id, progress.frames_done, progress.frames_total, progress.fps, progress.eta_s
            )

    async def _run(self, active: ActiveJob) -> None:
        job = active.job
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            assert self._threads is not None
            outcome = await loop.run_in_executor(self._threads, self._execute, active)
        except BaseException as exc:  # noqa: BLE001 - every failure of a job is classified
            if active.reason is not None:  # canceled or stopping: whatever it raised on the way out
                await self._stopped(active, time.monotonic() - started)
            else:
                await self._failed(job, exc, time.monotonic() - started)
        else:
            done = await self.store.finish(job.id, "succeeded", output={
                "frames_done": outcome.frames_done, "frames_total": outcome.frames_total,
                "output_bytes": outcome.output_bytes, "output_bucket": outcome.bucket, "output_key": outcome.key,
            })
            if done is None:  # canceled while it finished
                await self._remove_files(job.id)
            else:
                self.metrics.finished("succeeded", time.monotonic() - started)
                log.info("job %s succeeded: %d frames, %d bytes in %.1f s", job.id, outcome.frames_done,
                         outcome.output_bytes, time.monotonic() - started)
                self.webhooks.wake()
        finally:
            self._active.pop(job.id, None)
            await self._refresh_counts()
            self._wake.set()

    async def _stopped(self, active: ActiveJob, seconds: float) -> None:
        job = active.job
        if active.reason == "stopping":
            await self.store.requeue(job.id)
            await self._remove_files(job.id, keep_output=True)
            log.info("job %s stopped with the node; it runs again at the next start", job.id)
            return
        # canceled: the store already says so (the DELETE wrote it before stopping the thread)
        await self._remove_files(job.id)
        self.metrics.finished("canceled", seconds)
        log.info("job %s stopped: canceled", job.id)

    async def _failed(self, job: JobRecord, exc: BaseException, seconds: float) -> None:
        kind, text = error_kind(exc), error_text(exc)
        if not isinstance(exc, EXPECTED_ERRORS):  # a bug somewhere: its traceback helps
            log.warning("job %s attempt %d raised", job.id, job.attempts, exc_info=exc)
        if kind == "transient" and job.attempts < self.settings.max_attempts:
            backoff = Backoff(self.settings.retry_base_s, self.settings.retry_cap_s, self.rng)
            backoff.attempt = job.attempts - 1
            delay = backoff.next_delay()
            if await self.store.retry_later(job.id, self._clock() + delay, kind, text):
                self.metrics.retried()
                log.warning("job %s attempt %d failed (transient): %s; retrying in %.1f s", job.id, job.attempts, text, delay)
            await self._remove_files(job.id, keep_output=True)
            return
        if kind == "transient":
            text = f"gave up after {job.attempts} attempt(s) (jobs.max_attempts): {text}"
        done = await self.store.finish(job.id, "failed", error_kind=kind, error_message=text)
        await self._remove_files(job.id)
        if done is not None:
            self.metrics.finished("failed", seconds)
            self.metrics.failed(kind)
            log.error("job %s failed (%s): %s", job.id, kind, text)
            self.webhooks.wake()

    # ---- on a job's thread ----------------------------------------------------------------
    def _execute(self, active: ActiveJob) -> Outcome:
        job = active.job
        folder = self.job_dir(job.id)
        folder.mkdir(parents=True, exist_ok=True)
        output = folder / OUTPUT_NAME
        if output.exists():
            # an earlier attempt processed it (written atomically: it is whole) and stopped
            # before the upload or the store said so
            container = open_input(output)
            try:
                frames_done = frames_total = frames_expected(container.streams.video[0], container) or 0
            finally:
                container.close()
        else:
            source = self._input(job, folder, active.cancel)
            # FileError for an unusable input before any chain is built: process_file closes
            # the chain with its lane, which it opens only once the files are known to be good
            open_input(source).close()
            self._check(active)
            chain = self.presets.build(PresetSpec.model_validate(job.spec_json()))
            self._check(active, chain)

            def on_progress(progress: Progress) -> None:
                active.progress = progress

            final = process_file(
                source, output, chain, self.worker, on_progress=on_progress, cancel=active.cancel,
                lane_name=f"job-{job.id}",
            )
            frames_done, frames_total = final.frames_done, final.frames_total or final.frames_done
            if source.parent == folder:
                source.unlink(missing_ok=True)  # a fetched input is not kept once processed
        self._check(active)
        if self.storage is None:
            return Outcome(output.stat().st_size, frames_done, frames_total)
        key = self.storage.output_key(job.id, output.suffix)
        size = self.storage.upload(output, key)
        return Outcome(size, frames_done, frames_total, self.storage.bucket, key)

    def _check(self, active: ActiveJob, chain: Any = None) -> None:
        if active.cancel.is_set():
            if chain is not None:
                chain.close()
            raise Stopping() if active.reason == "stopping" else ProcessCanceled()

    def _input(self, job: JobRecord, folder: Path, cancel: threading.Event) -> Path:
        if UPLOAD_REF.fullmatch(job.input):
            try:
                return self.assets.resolve_video(job.input)
            except LivegenError as exc:
                raise FileError(f"input: {exc.detail}") from None
        if self.storage is None:
            raise FileError(f"input {job.input!r}: object storage is not configured (recording.upload)")
        suffix = Path(job.input).suffix.lower() if Path(job.input).suffix.lower() in (".mp4", ".mov", ".webm", ".mkv") else ""
        target = folder / f"input{suffix}"
        self.storage.download(job.input, target, cancel)
        return target

    # ---- housekeeping ---------------------------------------------------------------------
    async def _remove_files(self, job_id: str, *, keep_output: bool = False) -> None:
        folder = self.job_dir(job_id)

        def remove() -> None:
            if not folder.is_dir():
                return
            if not keep_output:
                shutil.rmtree(folder, ignore_errors=True)
                return
            for path in folder.iterdir():
                if path.name != OUTPUT_NAME:
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

        await asyncio.get_running_loop().run_in_executor(None, remove)

    async def _sweep(self, requeued: list[str]) -> None:
        """Files an earlier run left: partial files of the jobs it was running, and the folders of
        jobs that ended without output (failed, canceled) or that the store does not know."""
        if not self.data_dir.is_dir():
            return
        folders = [p.name for p in self.data_dir.iterdir() if p.is_dir() and JOB_ID.fullmatch(p.name)]
        states = await self.store.states(folders)
        for name in folders:
            state = states.get(name)
            if state is None or state in ("failed", "canceled"):
                await self._remove_files(name)
            elif name in requeued:
                await self._remove_files(name, keep_output=True)

    async def _expire(self) -> None:
        """Every quarter of `jobs.retention_s` (at most an hour): delete the jobs past it, and their folders."""
        retention, now = self.settings.retention_s, time.monotonic()
        if retention is not None and now >= self._next_expiry:
            self._next_expiry = now + min(3600.0, max(0.5, retention / 4))
            if expired := await self.store.expire(self._clock() - retention):
                for job_id in expired:
                    await self._remove_files(job_id)
                log.info("%d job(s) that ended over %.0f s ago deleted (jobs.retention_s)", len(expired), retention)
                await self._refresh_counts()

    async def _refresh_counts(self) -> None:
        try:
            self.counts = await self.store.counts()
        except Exception:  # the store closing under a last finishing job: keep the last counts
            log.debug("job counts not refreshed", exc_info=True)

