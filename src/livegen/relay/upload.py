"""`RecordingUploader`: recordings streamed to S3-compatible object storage (AWS S3, MinIO, R2)
while they are written, verified, then deleted locally.

A recording is a fragmented MP4 that grows while the stream runs. The uploader follows each file
with a multipart upload: whenever `part_bytes` new bytes are in it they go up as the next part;
when the recorder says the file is closed, the rest goes up as the last part (S3 lets only the
last part be under 5 MiB) and the upload is completed. An empty file is a plain PutObject.

Object key: `UploadSettings.prefix` (verbatim: end it with `/` for a folder) + the file's path
under the recordings folder, `/` between folders. A file outside that folder is refused (it could
not be found again after a restart).

Verification before a local file is deleted (size and multipart ETag), retries (per upload,
`flow.backoff.Backoff` with full jitter, same part numbers), which errors are permanent, and
restarts (a marker file beside each recording): see `relay.multipart`.

Credentials come from boto3's default chain (environment, shared files, instance role); they are
not in the settings and never in a log, status or error text.

Threads: one `ThreadStage` ("recording-upload") makes every S3 call, one per upload per round so
that uploads take turns. `on_file_opened` and `on_file_closed` may be called from any thread
(the recorder's, the event loop); they only note the fact and wake the stage. `start()` lists the
recordings folder (quick, no network): call it before recording begins. `stop(timeout)` ends the
thread within the timeout unless an S3 call is in flight (a part on a slow link); unfinished
uploads then resume from their markers at the next start. One part is in memory while it is
sent; at most 10,000 parts per object (80 GiB per recording at the 8 MiB default).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from livegen.config import UploadSettings
from livegen.flow.backoff import Backoff
from livegen.flow.stage import ThreadStage
from livegen.relay.multipart import (
    CONTENT_TYPE,
    FINISHED_KEPT,
    MARKER_SUFFIX,
    RECORDING_SUFFIXES,
    ErrorKind,
    LocalFileError,
    RecordingUpload,
    UploadedPart,
    UploadState,
    classify_error,
    describe_error,
    multipart_etag,
    read_marker,
)

log = logging.getLogger(__name__)


def s3_client(settings: UploadSettings, connect_timeout_s: float = 5.0, read_timeout_s: float = 60.0) -> Any:
    """The node's S3 client (recordings, file jobs); botocore's retries are off: callers use `Backoff`."""
    config = Config(
        region_name=settings.region,
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"total_max_attempts": 1},
        # path-style for custom endpoints: MinIO needs it, R2 and others accept it
        s3={"addressing_style": "path"} if settings.endpoint else None,
        # only what every S3-compatible server understands; parts carry Content-MD5 instead
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client("s3", endpoint_url=settings.endpoint, config=config)


class RecordingUploader(ThreadStage):
    """Uploads the recordings under `recordings_dir` to the bucket of `settings` (see the module
    docstring). The recorder calls `on_file_opened` when it starts a file and `on_file_closed`
    when the file is complete; the API and metrics read `status_json()` and the counters."""

    connect_timeout_s = 5.0
    read_timeout_s = 60.0

    def __init__(
        self,
        settings: UploadSettings,
        recordings_dir: Path | str,
        *,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        poll_s: float = 0.5,
        rng: Callable[[], float] = random.random,
        name: str = "recording-upload",
    ):
        super().__init__(name)
        if settings.endpoint is not None:
            parts = urlsplit(settings.endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"upload endpoint {settings.endpoint!r} is not an http(s):// URL")
        if poll_s <= 0:
            raise ValueError(f"poll_s must be > 0, not {poll_s}")
        Backoff(backoff_base_s, backoff_cap_s)  # raises on a bad pair now, not in the thread
        self.settings = settings
        self.recordings_dir = Path(os.path.abspath(recordings_dir))
        self.idle_wait_s = poll_s
        """How often a growing file is looked at for a new part's worth of bytes."""
        self._backoff_args = (backoff_base_s, backoff_cap_s, rng)
        self._lock = threading.Lock()
        self._uploads: dict[Path, RecordingUpload] = {}
        self._finished: deque[RecordingUpload] = deque(maxlen=FINISHED_KEPT)
        self._client: Any = None
        self.completed = 0
        """Uploads completed and verified since start."""
        self.failures = 0
        """Uploads that failed (permanent error, unreadable file, verification mismatch)."""
        self.retries = 0
        """S3 calls retried after a transient error, all uploads together."""

    # ---- what the recorder calls (any thread) ---------------------------------------------
    def key_for(self, path: Path | str) -> str:
        """The object key of a recording: prefix + its path under the recordings folder."""
        absolute = Path(os.path.abspath(path))
        try:
            relative = absolute.relative_to(self.recordings_dir)
        except ValueError:
            raise ValueError(f"recording {absolute} is not in the recordings folder {self.recordings_dir}") from None
        return self.settings.prefix + relative.as_posix()

    def on_file_opened(self, path: Path | str) -> None:
        """A recording was started: follow it while it grows."""
        self._note(path, closed=False)

    def on_file_closed(self, path: Path | str) -> None:
        """A recording is complete (its last byte written and flushed): finish its upload."""
        self._note(path, closed=True)

    def _note(self, path: Path | str, *, closed: bool) -> None:
        key = self.key_for(path)
        absolute = Path(os.path.abspath(path))
        with self._lock:
            upload = self._uploads.get(absolute)
            if upload is None:
                self._uploads[absolute] = RecordingUpload(absolute, key, self._backoff(), closed=closed)
            elif not upload.completed:
                upload.closed = closed
        self.wake()

    def pending(self, path: Path | str) -> bool:
        """Whether the recording at `path` is not safely in storage yet (retention spares it)."""
        absolute = Path(os.path.abspath(path))
        with self._lock:
            if absolute in self._uploads:
                return True
        record = read_marker(absolute.with_name(absolute.name + MARKER_SUFFIX))
        return record is None or not record.get("done", False)

    # ---- the owner ------------------------------------------------------------------------
    def start(self) -> None:
        """Take up the recordings an earlier run left (see the module docstring), then start."""
        if self._thread is None:
            self._recover()
        super().start()

    def stop(self, timeout: float = 5.0) -> bool:
        """End the thread; unfinished uploads stay resumable from their markers."""
        ended = super().stop(timeout)
        if ended and self._client is not None:
            self._client.close()
            self._client = None
        return ended

    def status_json(self) -> dict[str, Any]:
        with self._lock:
            uploads = [u.as_json() for u in self._finished] + [u.as_json() for u in self._uploads.values()]
            return {
                "bucket": self.settings.bucket,
                "uploads": uploads,
                "completed": self.completed,
                "failures": self.failures,
                "retries": self.retries,
            }

    def _recover(self) -> None:
        if not self.recordings_dir.is_dir():
            return
        for scratch in self.recordings_dir.rglob("*" + MARKER_SUFFIX + ".tmp"):
            scratch.unlink(missing_ok=True)  # a marker being written when the node went down
        for marker in self.recordings_dir.rglob("*" + MARKER_SUFFIX):
            if not marker.with_name(marker.name[: -len(MARKER_SUFFIX)]).exists():
                log.info("removing %s: its recording is gone", marker)
                marker.unlink(missing_ok=True)
        found = 0
        for path in sorted(self.recordings_dir.rglob("*")):
            if path.suffix not in RECORDING_SUFFIXES or not path.is_file():
                continue
            key = self.key_for(path)
            upload = RecordingUpload(path, key, self._backoff(), closed=True)
            record = read_marker(upload.marker)
            if record is not None and record.get("key") == key:
                if record.get("done"):
                    continue
                upload.restore(record)
            with self._lock:
                if path in self._uploads:
                    continue
                self._uploads[path] = upload
            found += 1
        if found:
            log.info("%d recording(s) in %s left to upload from an earlier run", found, self.recordings_dir)

    def _backoff(self) -> Backoff:
        base, cap, rng = self._backoff_args
        return Backoff(base, cap, rng)

    # ---- the thread -----------------------------------------------------------------------
    def step(self) -> bool:
        if self._client is None:
            self._client = s3_client(self.settings, self.connect_timeout_s, self.read_timeout_s)
        busy = False
        for upload in self._due():
            if self.stopping:
                break
            busy |= self._advance(upload)
        return busy

    def _due(self) -> Iterator[RecordingUpload]:
        now = time.monotonic()
        with self._lock:
            uploads = list(self._uploads.values())
        return (u for u in uploads if u.retry_at <= now)

    def _advance(self, upload: RecordingUpload) -> bool:
        """One S3 call for `upload`, if it has one to make; True when it did."""
        try:
            return self._next_call(upload)
        except LocalFileError as exc:
            self._fail(upload, str(exc))
            return True
        except (ClientError, BotoCoreError) as exc:
            self._call_failed(upload, exc)
            return True

    def _next_call(self, upload: RecordingUpload) -> bool:
        closed = upload.closed  # before the size: once closed, the size read next is the final one
        size = self._local_size(upload)
        if upload.completed:
            self._verify(upload, size)
            return True
        if not upload.listed:
            self._list_parts(upload)
            return True
        offset = upload.uploaded_bytes
        if size < offset:
            raise LocalFileError(f"{upload.path} shrank to {size} bytes below the {offset} already uploaded")
        waiting = size - offset
        if waiting >= self.settings.part_bytes or (closed and waiting > 0):
            if upload.upload_id is None:
                self._create(upload)
            else:
                self._upload_part(upload, offset, min(waiting, self.settings.part_bytes))
            return True
        if not closed:
            return False
        if upload.upload_id is None:
            self._put_empty(upload)
        else:
            self._complete(upload)
        return True

    def _local_size(self, upload: RecordingUpload) -> int:
        try:
            return upload.path.stat().st_size
        except OSError as exc:
            raise LocalFileError(f"cannot read {upload.path}: {exc.strerror}") from exc

    def _call(self, upload: RecordingUpload, operation: str, **params: Any) -> dict[str, Any]:
        with self._lock:
            upload.attempts += 1
        answer = getattr(self._client, operation)(Bucket=self.settings.bucket, Key=upload.key, **params)
        # a listing is the probe after an error, not progress: the backoff keeps growing until
        # the call that failed goes through
        if upload.backoff.attempt and operation != "list_parts":
            log.info("[%s] %s went through after %d retries", upload.key, operation, upload.backoff.attempt)
            upload.backoff.reset()
        return answer

    def _call_failed(self, upload: RecordingUpload, exc: ClientError | BotoCoreError) -> None:
        kind = classify_error(exc)
        error = describe_error(exc)
        if kind is ErrorKind.PERMANENT:
            self._fail(upload, error)
        elif kind is ErrorKind.UPLOAD_LOST:
            log.warning("[%s] %s: the server lost the multipart upload; starting it again from part 1", upload.key, error)
            self._start_over(upload, error)
        else:
            delay = upload.backoff.next_delay()
            with self._lock:
                upload.retries += 1
                self.retries += 1
                upload.last_error = error
                # after an outage, first ask what the server still has (a cheap ListParts, not a
                # part's worth of bytes sent blind): a restarted server may have lost the upload
                # (NoSuchUpload: start again) or some of its parts (sent again)
                if upload.upload_id is not None and not upload.completed:
                    upload.listed = False
            upload.retry_at = time.monotonic() + delay
            if upload.backoff.attempt == 1:
                log.warning("[%s] %s; retrying (backoff up to %.0f s)", upload.key, error, upload.backoff.cap_s)
            else:
                log.debug("[%s] %s; retry %d in %.2f s", upload.key, error, upload.backoff.attempt, delay)

    def _create(self, upload: RecordingUpload) -> None:
        answer = self._call(upload, "create_multipart_upload", ContentType=CONTENT_TYPE)
        with self._lock:
            upload.upload_id = answer["UploadId"]
            upload.set_state(UploadState.UPLOADING)
        upload.save()
        log.info("[%s] upload started", upload.key)

    def _upload_part(self, upload: RecordingUpload, offset: int, size: int) -> None:
        try:
            with upload.path.open("rb") as file:
                file.seek(offset)
                data = file.read(size)
        except OSError as exc:
            raise LocalFileError(f"cannot read {upload.path}: {exc.strerror}") from exc
        if len(data) != size:
            raise LocalFileError(f"{upload.path} shrank while its part was read")
        digest = hashlib.md5(data, usedforsecurity=False)
        number = len(upload.parts) + 1
        answer = self._call(
            upload, "upload_part", UploadId=upload.upload_id, PartNumber=number, Body=data,
            ContentMD5=base64.b64encode(digest.digest()).decode("ascii"),
        )
        part = UploadedPart(number, size, digest.hexdigest(), answer["ETag"].strip('"'))
        with self._lock:
            upload.parts.append(part)
            upload.bytes_sent += size
        upload.save()
        log.debug("[%s] part %d: %d bytes", upload.key, number, size)

    def _list_parts(self, upload: RecordingUpload) -> None:
        """Keep the recorded parts the server still has, as recorded; go on after the last."""
        held: dict[int, tuple[str, int]] = {}
        marker = 0
        while True:
            answer = self._call(upload, "list_parts", UploadId=upload.upload_id, PartNumberMarker=marker)
            for part in answer.get("Parts", []):
                held[int(part["PartNumber"])] = (part["ETag"].strip('"'), int(part["Size"]))
            if not answer.get("IsTruncated"):
                break
            marker = int(answer["NextPartNumberMarker"])
        kept = 0
        for part in upload.parts:
            if part.number != kept + 1 or held.get(part.number) != (part.etag, part.size):
                break
            kept += 1
        with self._lock:
            upload.parts = upload.parts[:kept]
            upload.resumed_parts = min(upload.resumed_parts, kept)
            upload.listed = True
        upload.save()
        log.info("[%s] going on after %d part(s) (%d bytes) the server has", upload.key, kept, upload.uploaded_bytes)

    def _put_empty(self, upload: RecordingUpload) -> None:
        self._call(upload, "put_object", Body=b"", ContentType=CONTENT_TYPE)
        with self._lock:
            upload.completed = upload.confirmed = True
            upload.set_state(UploadState.UPLOADING)
        upload.save()

    def _complete(self, upload: RecordingUpload) -> None:
        parts = [{"PartNumber": p.number, "ETag": f'"{p.etag}"'} for p in upload.parts]
        try:
            self._call(upload, "complete_multipart_upload", UploadId=upload.upload_id, MultipartUpload={"Parts": parts})
        except ClientError as exc:
            if classify_error(exc) is not ErrorKind.UPLOAD_LOST:
                raise
            # the upload may be gone because an earlier completion went through and its answer
            # was lost: the verification tells, and starts again when the object is not there
            with self._lock:
                upload.completed, upload.confirmed = True, False
            return
        with self._lock:
            upload.completed = upload.confirmed = True
        upload.save()

    def _verify(self, upload: RecordingUpload, size: int) -> None:
        try:
            head = self._call(upload, "head_object")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
            head = None
        expected = multipart_etag([p.md5 for p in upload.parts])
        if head is not None and int(head["ContentLength"]) == size and head["ETag"].strip('"') == expected:
            self._finish(upload, size)
            return
        found = "no object" if head is None else f"{head['ContentLength']} bytes, ETag {head['ETag']}"
        problem = f"verification: expected {size} bytes, ETag {expected}; found {found}"
        if upload.confirmed and head is not None:
            self._fail(upload, problem)
            return
        log.warning("[%s] %s; uploading it again from part 1", upload.key, problem)
        self._start_over(upload, problem)

    def _start_over(self, upload: RecordingUpload, error: str) -> None:
        with self._lock:
            upload.begin_again()
            upload.restarts += 1
            upload.last_error = error
        upload.save()

    def _finish(self, upload: RecordingUpload, size: int) -> None:
        if self.settings.keep_local:
            upload.save(done=True)
        else:
            upload.path.unlink(missing_ok=True)
            upload.marker.unlink(missing_ok=True)
        with self._lock:
            upload.set_state(UploadState.DONE)
            upload.finished_at = time.time()
            self._retire(upload)
            self.completed += 1
        log.info("[%s] uploaded and verified: %d bytes in %d part(s)%s", upload.key, size, len(upload.parts),
                 "" if self.settings.keep_local else "; local file deleted")

    def _fail(self, upload: RecordingUpload, error: str) -> None:
        with self._lock:
            upload.set_state(UploadState.FAILED)
            upload.last_error = error
            upload.finished_at = time.time()
            self._retire(upload)
            self.failures += 1
        log.error("[%s] upload failed: %s; the local file %s stays", upload.key, error, upload.path)

    def _retire(self, upload: RecordingUpload) -> None:
        """Move a finished upload from the work list to the status history (lock held)."""
        self._uploads.pop(upload.path, None)
        self._finished.append(upload)
