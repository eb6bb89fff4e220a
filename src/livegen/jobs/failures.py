"""What a failed attempt of a job means: `permanent` (the job fails at once: retrying cannot
help) or `transient` (it is retried, with backoff, up to `jobs.max_attempts`). The table:

| error | kind |
|---|---|
| `files.process.FileError`: input missing, not a video, undecodable, unsupported container | permanent |
| a 4xx `LivegenError` (the job's chain or asset can no longer be built) | permanent |
| object storage: no such key, access denied, bad credentials, other 4xx (`relay.multipart`) | permanent |
| object storage: time-out, connection refused or reset, 5xx, 408, 429, throttling | transient |
| `MemoryError`, `torch.OutOfMemoryError`, `OSError` (disk full, I/O) | transient |
| anything else (a bug in an effect): logged with its traceback | transient |
"""

from __future__ import annotations

import torch
from botocore.exceptions import BotoCoreError, ClientError

from livegen.errors import LivegenError
from livegen.files.process import FileError
from livegen.relay.multipart import ErrorKind, classify_error, describe_error

ERROR_TEXT_CHARS = 500
EXPECTED_ERRORS = (FileError, LivegenError, MemoryError, torch.OutOfMemoryError, OSError, ClientError, BotoCoreError)
"""Failures a job reports in one line; any other is logged with its traceback."""


def error_kind(exc: BaseException) -> str:
    """"permanent" or "transient" for an exception a job's thread raised."""
    if isinstance(exc, FileError) or getattr(exc, "kind", None) == "permanent":
        return "permanent"
    if isinstance(exc, LivegenError) and 400 <= exc.status < 500:
        return "permanent"
    if isinstance(exc, (ClientError, BotoCoreError)):
        return "permanent" if classify_error(exc) is ErrorKind.PERMANENT else "transient"
    return "transient"


def error_text(exc: BaseException) -> str:
    if isinstance(exc, (ClientError, BotoCoreError)):
        text = f"object storage: {describe_error(exc)}"
    elif isinstance(exc, LivegenError):
        text = exc.detail
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:ERROR_TEXT_CHARS]
