"""One recording's multipart upload, as the uploader keeps it: its parts, its marker file beside
the recording (what survives a restart), and how S3 errors are told apart (retry, start over, or
give up). `relay.upload` drives these; nothing here makes a network call.

Verification: after the upload is completed, HeadObject must show the local size and the ETag a
multipart object has, the MD5 of the parts' MD5s + "-N", computed here from the bytes read (an
empty file: the MD5 of nothing). Only then is the local file deleted (unless `keep_local`). Each
part is also sent with its Content-MD5, so the server rejects one damaged on the way. Storage that
does not use MD5 ETags (SSE-KMS, SSE-C) fails the check: the upload is `failed`, the file stays.

Retries: every S3 call that fails for a while (connection refused or reset, time-out, 5xx, 408,
429, throttling, clock skew) is retried with `flow.backoff.Backoff` (full jitter), per upload, for
as long as the uploader runs; botocore's own retries are off so that a stop never waits behind
them. A part is retried under its own number (S3 keeps the last copy), so nothing is lost or
doubled. After such an error the upload's next call is a ListParts (a cheap probe, not a part's
worth of bytes sent blind): a server that restarted may have lost some parts (they are sent
again) or the whole multipart upload (NoSuchUpload, also on any other call, or InvalidPart on
completion: it starts again from the first part; moto answers an UploadPart to a lost upload
with a 500, so the probe is what finds out there). Errors that
retrying cannot fix (NoSuchBucket, AccessDenied, InvalidAccessKeyId, a bad signature, no
credentials, any other 4xx) fail the upload at once: state `failed`, `last_error`, logged once,
the local file kept.

Restarts: beside each recording the uploader keeps `<file>.upload.json` (written atomically after
each change): the key, the multipart upload id and each part's number, size, MD5 and ETag. When
the uploader starts it lists the recordings folder: every recording (`.mp4`) not marked done is
taken as finished and uploaded, resuming where it stopped. A marked upload is resumed by listing
its parts (ListParts): the parts that the server still has, as recorded, are kept and the upload
goes on from the first one missing; NoSuchUpload starts it again from part 1. An upload that was
completed but not yet verified is verified first. Uploads started but never recorded (a crash
between CreateMultipartUpload and writing the marker) stay incomplete on the server: give the
bucket a lifecycle rule that aborts incomplete multipart uploads after a day. A marker whose
recording is gone is removed. With `keep_local` the marker stays, marked done, so the file is
not uploaded again.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import (
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from livegen.flow.backoff import Backoff

log = logging.getLogger(__name__)

MARKER_SUFFIX = ".upload.json"
RECORDING_SUFFIXES = (".mp4",)
CONTENT_TYPE = "video/mp4"
FINISHED_KEPT = 100
"""Finished uploads (done or failed) still shown in the status, newest last."""

# Error codes, by what retrying does for them.
UPLOAD_LOST_CODES = frozenset({"NoSuchUpload", "InvalidPart"})
PERMANENT_CODES = frozenset(
    {
        "NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
        "InvalidBucketName", "AllAccessDisabled", "AccountProblem",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
        "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
        "OperationAborted", "BadDigest", "ExpiredToken",
    }
)


class UploadState(str, enum.Enum):
    PENDING = "pending"
    UPLOADING = "uploading"
    DONE = "done"
    FAILED = "failed"


class ErrorKind(str, enum.Enum):
    TRANSIENT = "transient"
    """Retry the same call after a backoff."""
    UPLOAD_LOST = "upload_lost"
    """The server no longer has the multipart upload: start it again from part 1."""
    PERMANENT = "permanent"
    """Retrying cannot fix it: the upload fails."""


def classify_error(exc: BaseException) -> ErrorKind:
    """What to do after an S3 call raised `exc`."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in UPLOAD_LOST_CODES:
            return ErrorKind.UPLOAD_LOST
        if code in PERMANENT_CODES:
            return ErrorKind.PERMANENT
        if code in TRANSIENT_CODES or status >= 500 or status in (408, 429) or status == 0:
            return ErrorKind.TRANSIENT
        return ErrorKind.PERMANENT
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, ParamValidationError)):
        return ErrorKind.PERMANENT
    # the rest of botocore's own errors are the connection's: refused, reset, timed out
    return ErrorKind.TRANSIENT


def describe_error(exc: BaseException) -> str:
    """A short text for `last_error` and logs: the S3 code and message, never a request's headers."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = error.get("Message")
        return f"{exc.operation_name}: {code}" + (f" ({message})" if message else "")
    return f"{type(exc).__name__}: {exc}"


def multipart_etag(part_md5s: list[str]) -> str:
    """The ETag S3 gives a multipart object: MD5 of the parts' binary MD5s, then "-N"; with no
    parts (an empty file put whole), the MD5 of nothing."""
    if not part_md5s:
        return hashlib.md5(b"", usedforsecurity=False).hexdigest()
    joined = b"".join(bytes.fromhex(md5) for md5 in part_md5s)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(part_md5s)}"


@dataclass(frozen=True, slots=True)
class UploadedPart:
    number: int
    size: int
    md5: str
    """Hex MD5 of the bytes sent."""
    etag: str
    """As the server answered, without quotes."""


class LocalFileError(Exception):
    """The recording cannot be read as it was (gone, shrunk): the upload fails."""


class RecordingUpload:
    """One recording on its way to the bucket. The uploader's thread changes it, holding the
    uploader's lock for what `as_json` reads; other threads only set `closed` (under the lock)."""

    def __init__(self, path: Path, key: str, backoff: Backoff, *, closed: bool):
        self.path = path
        self.key = key
        self.closed = closed
        self.backoff = backoff
        self.retry_at = 0.0
        self.state = UploadState.PENDING
        self.history: list[str] = [UploadState.PENDING.value]
        self.upload_id: str | None = None
        self.parts: list[UploadedPart] = []
        self.listed = True
        """False while the parts are to be checked against the server: recorded by an earlier
        run, or the last call failed."""
        self.completed = False
        """The object exists (completed or put): verify it next."""
        self.confirmed = False
        """The server answered the completion itself (not inferred after NoSuchUpload)."""
        self.attempts = 0
        self.retries = 0
        self.restarts = 0
        self.resumed_parts = 0
        """Parts an earlier run uploaded that this one kept."""
        self.bytes_sent = 0
        """Part bytes this run sent and the server took (a part sent again counts again)."""
        self.last_error: str | None = None
        self.started_at = time.time()
        self.finished_at: float | None = None

    @property
    def marker(self) -> Path:
        return self.path.with_name(self.path.name + MARKER_SUFFIX)

    @property
    def uploaded_bytes(self) -> int:
        return sum(part.size for part in self.parts)

    def set_state(self, state: UploadState) -> None:
        if state != self.state:
            self.state = state
            self.history.append(state.value)

    def begin_again(self) -> None:
        self.upload_id = None
        self.parts = []
        self.resumed_parts = 0
        self.listed = True
        self.completed = self.confirmed = False

    def as_json(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "key": self.key,
            "state": self.state.value,
            "history": list(self.history),
            "closed": self.closed,
            "bytes_uploaded": self.uploaded_bytes,
            "bytes_sent": self.bytes_sent,
            "parts": len(self.parts),
            "resumed_parts": self.resumed_parts,
            "attempts": self.attempts,
            "retries": self.retries,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    # ---- the marker beside the recording --------------------------------------------------
    def save(self, *, done: bool = False) -> None:
        record = {
            "key": self.key,
            "upload_id": self.upload_id,
            "parts": [[p.number, p.size, p.md5, p.etag] for p in self.parts],
            "completed": self.completed,
            "done": done,
        }
        scratch = self.marker.with_name(self.marker.name + ".tmp")
        scratch.write_text(json.dumps(record), encoding="utf-8")
        os.replace(scratch, self.marker)

    def restore(self, record: dict[str, Any]) -> None:
        """Take up what an earlier run recorded (for the same key)."""
        self.upload_id = record.get("upload_id")
        self.parts = [UploadedPart(int(n), int(size), str(md5), str(etag)) for n, size, md5, etag in record.get("parts", [])]
        self.resumed_parts = len(self.parts)
        self.completed = self.confirmed = bool(record.get("completed"))
        self.listed = self.upload_id is None or self.completed
        if self.upload_id is not None or self.completed:
            self.set_state(UploadState.UPLOADING)


def read_marker(marker: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
