"""REST for recordings: start and stop one on a live stream, list every recording of the node
(running, and finished ones in the recordings folder, also after a restart), download a file
(HTTP Range: a player can seek), delete a finished one.

| method, path | answer |
|---|---|
| `POST /api/streams/{stream}/recordings` | start recording → `201` with the recording |
| `DELETE /api/streams/{stream}/recordings/{id}` | stop it → `200` (its files stay) |
| `GET /api/recordings` | every recording: id, stream, started, duration_s, bytes, state, files, uploads |
| `GET /api/recordings/{id}/file?part=N` | the MP4 (`video/mp4`, Range), part N (default 0) |
| `DELETE /api/recordings/{id}` | delete a finished recording's files → `200`; `409` while it runs |
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp import web

from livegen.api.auth import authorize
from livegen.api.keys import HUB, SETTINGS
from livegen.errors import BadRequest, Conflict, NotFound
from livegen.relay.recording import FILE_NAME, RecordingOutput, list_recordings

RECORDING_ID = re.compile(r"[0-9a-f]{8}")


def _running(request: web.Request) -> dict[str, RecordingOutput]:
    return {
        output.id: output
        for stream in request.app[HUB].streams.values()
        for output in stream.outputs.of_kind("recording")
        if isinstance(output, RecordingOutput)
    }


def _recordings(request: web.Request) -> dict[str, dict[str, Any]]:
    """Every recording by id: the running ones as they report themselves, then what the folder
    holds (finished files, or files an earlier run left)."""
    running = _running(request)
    found: dict[str, dict[str, Any]] = {rid: output.as_json() for rid, output in running.items()}
    uploads = {}
    uploader = request.app[HUB].uploader
    if uploader is not None:
        uploads = {u["file"]: u for u in uploader.status_json()["uploads"]}
    for file in list_recordings(request.app[SETTINGS].recording.dir):
        entry = found.setdefault(file.recording_id, {
            "id": file.recording_id, "stream": file.stream, "started": file.started, "duration_s": None,
            "bytes": 0, "state": "complete", "files": [],
        })
        if file.recording_id not in running:
            entry["bytes"] += file.bytes
            entry["files"].append(str(file.path))
            if not file.complete:
                entry["state"] = "writing"  # another process holds it
    for path, upload in uploads.items():
        match = FILE_NAME.match(Path(path).name)
        if match is None:
            continue
        entry = found.setdefault(match["id"], {
            "id": match["id"], "stream": match["stream"], "started": upload["started_at"], "duration_s": None,
            "bytes": 0, "state": "uploaded" if upload["state"] == "done" else "uploading", "files": [],
        })
        entry.setdefault("uploads", []).append({k: upload[k] for k in ("key", "state", "bytes_uploaded", "last_error")})
    return found


def _one(request: web.Request) -> dict[str, Any]:
    recording_id = request.match_info["recording"]
    if not RECORDING_ID.fullmatch(recording_id):
        raise BadRequest(f"invalid recording id {recording_id!r}")
    recording = _recordings(request).get(recording_id)
    if recording is None:
        raise NotFound(f"no recording {recording_id!r}")
    authorize(request, request.app[SETTINGS].auth, "control", recording["stream"])
    return recording


async def list_all(request: web.Request) -> web.Response:
    authorize(request, request.app[SETTINGS].auth, "control", "*")
    recordings = sorted(_recordings(request).values(), key=lambda r: r["started"], reverse=True)
    return web.json_response({"recordings": recordings})


async def download(request: web.Request) -> web.FileResponse:
    recording = _one(request)
    try:
        part = int(request.query.get("part", "0"))
        path = recording["files"][part]
    except (ValueError, IndexError):
        raise NotFound(f"recording {recording['id']} has no part {request.query.get('part')!r}") from None
    return web.FileResponse(path, headers={"Content-Type": "video/mp4"})


async def delete(request: web.Request) -> web.Response:
    recording = _one(request)
    if recording["id"] in _running(request):
        raise Conflict(f"recording {recording['id']} is running: stop it first (DELETE /api/streams/{recording['stream']}/recordings/{recording['id']})")
    for path in recording["files"]:
        Path(path).unlink(missing_ok=True)
    return web.json_response({"id": recording["id"], "deleted": len(recording["files"])})


async def start(request: web.Request) -> web.Response:
    name = request.match_info["stream"]
    authorize(request, request.app[SETTINGS].auth, "control", name)
    recording = request.app[HUB].stream(name).outputs.record()
    assert isinstance(recording, RecordingOutput)
    return web.json_response(recording.as_json(), status=201)


async def stop(request: web.Request) -> web.Response:
    name = request.match_info["stream"]
    authorize(request, request.app[SETTINGS].auth, "control", name)
    outputs = request.app[HUB].stream(name).outputs
    return web.json_response(await outputs.remove(request.match_info["recording"], kind="recording"))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/streams/{stream}/recordings", start)
    app.router.add_delete("/api/streams/{stream}/recordings/{recording}", stop)
    app.router.add_get("/api/recordings", list_all)
    app.router.add_get("/api/recordings/{recording}/file", download)
    app.router.add_delete("/api/recordings/{recording}", delete)
