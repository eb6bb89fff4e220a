"""`JobStorage`: file jobs' inputs read from, and outputs written to, the object storage that
recordings use (`recording.upload`: the same settings, the same client factory
`relay.upload.s3_client`, the same error classification `relay.multipart.classify_error`).

An input is named by its object key in that bucket, as is (no prefix is added). An output goes
to `<prefix>jobs/<job id>/output<ext>`, is checked with HeadObject (its size), and the local copy
is removed unless `keep_local`. Every call blocks: the runner calls them on its job threads.
Errors are botocore's; the runner classifies them (transient: time-outs, 5xx, throttling;
permanent: a missing key, access denied).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from livegen.config import UploadSettings
from livegen.relay.upload import s3_client

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
PRESIGN_S = 3600
MAX_KEY_CHARS = 1024


class InputCanceled(Exception):
    """The job was canceled while its input was being fetched."""


def _missing(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    return str(error.get("Code")) in ("404", "NoSuchKey", "NotFound")


class JobStorage:
    def __init__(self, settings: UploadSettings):
        self.settings = settings
        self._lock = threading.Lock()
        self._client: Any = None

    @property
    def bucket(self) -> str:
        return self.settings.bucket

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = s3_client(self.settings)
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def output_key(self, job_id: str, suffix: str = ".mp4") -> str:
        return f"{self.settings.prefix}jobs/{job_id}/output{suffix}"

    def exists(self, key: str) -> bool:
        """Whether the bucket has `key` (HeadObject); botocore's errors but a 404 pass through."""
        try:
            self.client().head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        return True

    def download(self, key: str, target: Path, cancel: threading.Event | None = None) -> int:
        """Fetch `key` into `target` (written whole or not at all); its size."""
        answer = self.client().get_object(Bucket=self.bucket, Key=key)
        partial = target.with_name(target.name + ".part")
        size = 0
        body = answer["Body"]
        try:
            with partial.open("wb") as file:
                while chunk := body.read(CHUNK):
                    if cancel is not None and cancel.is_set():
                        raise InputCanceled(key)
                    file.write(chunk)
                    size += len(chunk)
                file.flush()
                os.fsync(file.fileno())
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            body.close()
        return size

    def upload(self, path: Path, key: str, content_type: str = "video/mp4") -> int:
        """Put `path` at `key` (multipart above `part_bytes`), check its size in the bucket, and
        remove the local file unless `keep_local`; the size."""
        from boto3.s3.transfer import TransferConfig

        size = path.stat().st_size
        config = TransferConfig(
            multipart_threshold=self.settings.part_bytes, multipart_chunksize=self.settings.part_bytes, use_threads=False
        )
        self.client().upload_file(str(path), self.bucket, key, ExtraArgs={"ContentType": content_type}, Config=config)
        head = self.client().head_object(Bucket=self.bucket, Key=key)
        if int(head["ContentLength"]) != size:
            raise OSError(f"{key}: the bucket holds {head['ContentLength']} bytes, not the {size} uploaded")
        if not self.settings.keep_local:
            path.unlink(missing_ok=True)
        log.info("job output uploaded to %s/%s (%d bytes)", self.bucket, key, size)
        return size

    def presign(self, key: str, expires_s: int = PRESIGN_S) -> str | None:
        """A time-limited GET URL for `key`; None when the client cannot make one (no credentials)."""
        try:
            return self.client().generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
            )
        except Exception as exc:  # botocore raises several kinds (no credentials, bad params)
            log.info("no presigned URL for %s: %s", key, type(exc).__name__)
            return None
