"""REST for file jobs: a video through an effect chain inside the node, asynchronously.

| method, path | answer |
|---|---|
| `POST /api/jobs` | `{"input", "preset" or "effects", "params", "webhook_url"}` + `Idempotency-Key` → `202` with the job; the same key and body again → `200`, the same job; the same key, another body → `422` |
| `GET /api/jobs?state=&limit=&before=` | newest first, a bounded page; `next` is the `before` of the next page |
| `GET /api/jobs/{id}` | state, progress, frames, ETA, error {kind, message}, attempts, webhook deliveries |
| `DELETE /api/jobs/{id}` | cancel a queued or running job → `200` (`409` once it succeeded or failed) |
| `GET /api/jobs/{id}/output` | the file (`video/mp4`, Range), or its object-storage location as JSON |

`input` is `upload:<id>` (a video uploaded with `POST /api/assets`) or, with object storage
configured (`recording.upload`), an object key in that bucket. With tokens configured, the
operator or a publish token may create jobs; a publish token sees and cancels only the jobs it
created (others are 404 to it). Jobs are kept under the token's identity, never the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import Field, field_validator

from livegen.api.auth import NODE, authorize, token_identity
from livegen.api.bodies import read_model
from livegen.api.keys import ASSETS, SETTINGS
from livegen.api.metrics import METRICS
from livegen.api.streams import StreamPatch
from livegen.errors import (
    AtCapacity,
    BadRequest,
    Conflict,
    LivegenError,
    NotFound,
    Unprocessable,
)
from livegen.jobs.metrics import JobsCollector
from livegen.jobs.records import JOB_ID, STATES, JobRecord, NewJob, describe_progress
from livegen.jobs.runner import JobRunner
from livegen.jobs.store import IdempotencyConflict
from livegen.jobs.webhooks import NotPublic, check_reachable
from livegen.media.assets import UPLOAD_REF

JOBS = web.AppKey("jobs", JobRunner)
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
"""Printable ASCII without spaces, at most 255 characters."""
ANONYMOUS = "anonymous"


class JobRequest(StreamPatch):
    """A job: the chain is asked for exactly as a stream's PATCH asks for one (preset or
    effects, then params), plus the input and where to report the end."""

    input: str = Field(min_length=1, max_length=1024)
    webhook_url: str | None = Field(None, max_length=2048)

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return url


def _field_error(field: str, exc: LivegenError) -> Unprocessable:
    detail = exc.detail
    return Unprocessable(f"{field}: {detail}", errors=[{"field": field, "message": detail}])


def _scope(request: web.Request) -> str | None:
    """401/403 unless the request may use jobs; then whose jobs it sees (None: everyone's)."""
    auth = request.app[SETTINGS].auth
    authorize(request, auth, "upload", NODE)
    identity = token_identity(request, auth)
    return None if identity in (None, "operator") else identity


async def _job(request: web.Request) -> JobRecord:
    scope = _scope(request)
    job_id = request.match_info["job"]
    if not JOB_ID.fullmatch(job_id):
        raise BadRequest(f"invalid job id {job_id!r}")
    runner = request.app[JOBS]
    job = await runner.store.get(job_id) if await runner.opened(create=False) else None
    if job is None or (scope is not None and job.owner != scope):
        raise NotFound(f"no job {job_id!r}")
    return job


async def describe(runner: JobRunner, jobs: list[JobRecord]) -> list[dict[str, Any]]:
    """The jobs as the API shows them: live progress of running ones, webhook deliveries."""
    deliveries = await runner.store.deliveries([job.id for job in jobs if job.webhook_url is not None])
    described = []
    for job in jobs:
        body = describe_progress(job.as_json(runner.settings.max_attempts), runner.live_progress(job.id))
        if job.webhook_url is not None:
            body["webhook"] = {"url": job.webhook_url, "deliveries": [d.as_json() for d in deliveries.get(job.id, [])]}
        described.append(body)
    return described


def _request_hash(body: JobRequest) -> tuple[dict[str, Any], str]:
    canonical = body.model_dump(mode="json", exclude_none=True)
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return canonical, hashlib.sha256(text.encode()).hexdigest()


async def create(request: web.Request) -> web.Response:
    app = request.app
    runner, settings = app[JOBS], app[SETTINGS]
    _scope(request)
    owner = token_identity(request, settings.auth) or ANONYMOUS
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise BadRequest("Idempotency-Key: 1 to 255 printable ASCII characters, no spaces")
    body = await read_model(request, JobRequest)
    canonical, request_hash = _request_hash(body)
    if key is not None and await runner.opened(create=False):
        # a repeat is answered before anything is checked again: the first answer stands
        existing = await runner.store.find(owner, key)
        if existing is not None:
            return _repeat(existing, request_hash, await describe(runner, [existing]))
    spec = await _check(request, runner, body)
    if not await runner.opened(create=True):
        raise AtCapacity("the node is stopping: post the job again to another node or later")
    new = NewJob(owner, key, request_hash, canonical, spec, body.input, body.webhook_url)
    try:
        job, created = await runner.store.create(new)
    except IdempotencyConflict as exc:  # the same key, posted twice at once with different bodies
        return _repeat(exc.job, request_hash, [])
    [described] = await describe(runner, [job])
    if not created:
        return web.json_response(described, status=200, headers={"Location": f"/api/jobs/{job.id}"})
    runner.wake()
    return web.json_response(described, status=202, headers={"Location": f"/api/jobs/{job.id}"})


def _repeat(job: JobRecord, request_hash: str, described: list[dict[str, Any]]) -> web.Response:
    if job.request_hash != request_hash:
        raise Unprocessable(
            f"Idempotency-Key was used for job {job.id} with a different body",
            errors=[{"field": "Idempotency-Key", "message": "used before with a different body"}],
            job=job.id,
        )
    return web.json_response(described[0], status=200, headers={"Location": f"/api/jobs/{job.id}"})


async def _check(request: web.Request, runner: JobRunner, body: JobRequest) -> dict[str, Any]:
    """Everything that can be known before the job runs: the input exists (and is a video), the
    chain is one the node can build. The resolved chain, as stored with the job."""
    settings = request.app[SETTINGS]
    loop = asyncio.get_running_loop()
    if body.webhook_url is not None and settings.jobs.webhook_secret is None:
        raise Unprocessable(
            "webhook_url: this node has no jobs.webhook_secret to sign webhooks with",
            errors=[{"field": "webhook_url", "message": "the node has no jobs.webhook_secret"}],
        )
    if body.webhook_url is not None:
        try:
            await check_reachable(body.webhook_url, settings.jobs.webhook_allow_private)
        except NotPublic as exc:
            raise Unprocessable(f"webhook_url: {exc}", errors=[{"field": "webhook_url", "message": str(exc)}]) from None
    if UPLOAD_REF.fullmatch(body.input):
        try:
            request.app[ASSETS].resolve_video(body.input)
        except LivegenError as exc:
            raise _field_error("input", exc) from None
    elif body.input.startswith("upload:"):
        raise _field_error("input", Unprocessable(f"{body.input!r} is not a valid upload reference"))
    elif runner.storage is None:
        raise _field_error("input", Unprocessable(
            "use upload:<id> (POST /api/assets); object keys need object storage (recording.upload)"
        ))
    elif body.input.startswith("/") or "\x00" in body.input:
        raise _field_error("input", Unprocessable("an object key does not start with '/'"))
    else:
        try:
            found = await loop.run_in_executor(None, runner.storage.exists, body.input)
        except Exception:  # storage unreachable now: the job fetches it later, with retries
            found = True
        if not found:
            raise _field_error("input", Unprocessable(f"no object {body.input!r} in bucket {runner.storage.bucket!r}"))
    presets = runner.presets
    spec = presets.requested(body.preset, body.effects, body.params)
    # built once here so that every effect and parameter is checked as a stream's would be;
    # the job builds its own chain when it runs (maybe after a restart)
    chain = await loop.run_in_executor(None, presets.build, spec)
    chain.close()
    return spec.model_dump(mode="json")


async def get_job(request: web.Request) -> web.Response:
    job = await _job(request)
    [described] = await describe(request.app[JOBS], [job])
    return web.json_response(described)


async def list_jobs(request: web.Request) -> web.Response:
    scope = _scope(request)
    runner = request.app[JOBS]
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise BadRequest(f"state: one of {', '.join(STATES)}, not {state!r}")
    max_page = runner.settings.max_page
    try:
        limit = int(request.query.get("limit", str(min(50, max_page))))
        before = int(request.query["before"]) if "before" in request.query else None
    except ValueError:
        raise BadRequest("limit and before must be whole numbers") from None
    if not 1 <= limit <= max_page:
        raise BadRequest(f"limit: 1 to {max_page} (jobs.max_page)")
    if not await runner.opened(create=False):  # no job was ever posted here
        return web.json_response({"jobs": [], "next": None})
    jobs = await runner.store.page(owner=scope, state=state, before=before, limit=limit)
    following = str(jobs[-1].seq) if len(jobs) == limit else None
    return web.json_response({"jobs": await describe(runner, jobs), "next": following})


async def cancel_job(request: web.Request) -> web.Response:
    job = await _job(request)
    if job.state in ("succeeded", "failed"):
        raise Conflict(f"job {job.id} already {job.state}")
    runner = request.app[JOBS]
    canceled = await runner.cancel(job.id)
    if canceled is None:
        raise NotFound(f"no job {job.id!r}")
    if canceled.state != "canceled":  # it ended on its own just before
        raise Conflict(f"job {job.id} already {canceled.state}")
    [described] = await describe(runner, [canceled])
    return web.json_response(described)


async def output(request: web.Request) -> web.StreamResponse:
    job = await _job(request)
    if job.state != "succeeded":
        raise Conflict(f"job {job.id} is {job.state}: its output is there once it succeeded")
    runner = request.app[JOBS]
    if job.output_key is not None and runner.storage is not None:
        url = await asyncio.get_running_loop().run_in_executor(None, runner.storage.presign, job.output_key)
        body = {"bucket": job.output_bucket, "key": job.output_key, "bytes": job.output_bytes}
        if url is not None:
            body["url"] = url
        return web.json_response(body)
    path = runner.output_path(job.id)
    if not path.is_file():
        raise NotFound(f"the output of job {job.id} is no longer on this node")
    return web.FileResponse(path, headers={
        "Content-Type": "video/mp4", "Content-Disposition": f'attachment; filename="{job.id}.mp4"',
    })


async def _run_jobs(app: web.Application) -> AsyncIterator[None]:
    runner = app[JOBS]
    await runner.start()
    yield
    await runner.stop()


def install_metrics(app: web.Application) -> None:
    """Jobs' series on the app's registry (after `api.metrics.install`)."""
    runner = app[JOBS]
    app[METRICS].registry.register(JobsCollector(runner.metrics, lambda: runner.counts))


def add_routes(app: web.Application, runner: JobRunner) -> None:
    """The routes, and the runner's life (after the device worker starts, before it stops:
    add this after the engine's cleanup context)."""
    app[JOBS] = runner
    app.router.add_post("/api/jobs", create)
    app.router.add_get("/api/jobs", list_jobs)
    app.router.add_get("/api/jobs/{job}", get_job)
    app.router.add_delete("/api/jobs/{job}", cancel_job)
    app.router.add_get("/api/jobs/{job}/output", output)
    app.cleanup_ctx.append(_run_jobs)
