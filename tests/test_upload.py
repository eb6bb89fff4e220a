"""Recordings to object storage: `RecordingUploader` against a real S3 endpoint (moto's server in
a subprocess, see tests/s3_server.py), with files that grow while they are uploaded, a server
that is killed mid-upload, a missing bucket and an uploader that is restarted."""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from livegen.config import UploadSettings
from livegen.relay.multipart import MARKER_SUFFIX, ErrorKind, classify_error
from livegen.relay.upload import RecordingUploader
from tests.s3_server import FAKE_CREDENTIALS, REGION, MotoS3Server, moto_missing

MiB = 1024 * 1024
PART = 5 * MiB
BUCKET = "recordings"


@pytest.fixture(scope="module")
def s3() -> Iterator[MotoS3Server]:
    missing = moto_missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the S3 tests need moto[server]: {missing}")
        pytest.skip(missing)
    with MotoS3Server(buckets=[BUCKET]) as server:
        yield server


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the fake keys: no profile, shared file or instance role of the machine running this."""
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def make_uploader(s3: MotoS3Server, tmp_path: Path) -> Iterator[Callable[..., RecordingUploader]]:
    """Uploaders on `tmp_path/recordings`, quick to poll and to retry; each is stopped at the end
    and must stop in time."""
    made: list[RecordingUploader] = []

    def make(**settings: Any) -> RecordingUploader:
        values = {"endpoint": s3.endpoint, "bucket": BUCKET, "region": REGION, "part_bytes": PART, **settings}
        uploader = RecordingUploader(
            UploadSettings(**values), tmp_path / "recordings", backoff_base_s=0.05, backoff_cap_s=0.3, poll_s=0.02
        )
        made.append(uploader)
        return uploader

    yield make
    for uploader in made:
        assert uploader.stop(timeout=5.0)
        assert not uploader.running


def recording(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "recordings" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def status_of(uploader: RecordingUploader, path: Path) -> dict[str, Any]:
    matches = [u for u in uploader.status_json()["uploads"] if u["file"] == str(path)]
    assert matches, f"no upload of {path}"
    return matches[-1]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_state(uploader: RecordingUploader, path: Path, state: str, timeout: float = 15.0) -> dict[str, Any]:
    wait_for(lambda: status_of(uploader, path)["state"] == state, timeout, f"{path.name} to be {state}")
    return status_of(uploader, path)


def stored(s3: MotoS3Server, key: str) -> bytes:
    client = s3.client()
    try:
        return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    finally:
        client.close()


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as file:
        file.write(data)


def test_growing_file_goes_up_in_parts_while_written(s3: MotoS3Server, make_uploader, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="livegen.relay.upload")
    path = recording(tmp_path, "cam1/2024-05-01T10-00-00.mp4")
    data = payload(13 * MiB, seed=1)
    uploader = make_uploader(prefix="live/")
    uploader.start()
    path.touch()
    uploader.on_file_opened(path)

    def write() -> None:  # the recorder: a fragment every 50 ms
        for start in range(0, len(data), MiB):
            append(path, data[start : start + MiB])
            time.sleep(0.05)

    writer = threading.Thread(target=write)
    writer.start()
    wait_for(lambda: status_of(uploader, path)["parts"] >= 1, 10, "the first part while the file grows")
    assert writer.is_alive(), "the first part should go up before the recording ends"
    writer.join()
    wait_for(lambda: status_of(uploader, path)["parts"] == 2, 10, "the second full part")
    assert status_of(uploader, path)["state"] == "uploading"  # open: the 3 MiB tail waits

    uploader.on_file_closed(path)
    status = wait_state(uploader, path, "done")

    assert status["key"] == "live/cam1/2024-05-01T10-00-00.mp4"
    assert stored(s3, status["key"]) == data
    assert status["history"] == ["pending", "uploading", "done"]
    assert (status["parts"], status["bytes_uploaded"], status["retries"]) == (3, len(data), 0)
    assert not path.exists() and not path.with_name(path.name + MARKER_SUFFIX).exists()
    assert uploader.status_json()["completed"] == 1
    # credentials come from the environment and go nowhere else
    shown = json.dumps(uploader.status_json()) + caplog.text
    for secret in FAKE_CREDENTIALS.values():
        assert secret not in shown


def test_server_killed_mid_upload_restarts_the_upload_from_part_one(s3: MotoS3Server, make_uploader, tmp_path: Path) -> None:
    path = recording(tmp_path, "cam2/crash.mp4")
    data = payload(13 * MiB, seed=2)
    uploader = make_uploader()
    uploader.start()
    path.write_bytes(data[: 6 * MiB])
    uploader.on_file_opened(path)
    wait_for(lambda: status_of(uploader, path)["parts"] == 1, 10, "part 1")

    s3.kill()  # loses the multipart upload and part 1 with it
    append(path, data[6 * MiB :])
    uploader.on_file_closed(path)
    wait_for(lambda: status_of(uploader, path)["retries"] >= 2, 10, "retries while the server is down")
    assert status_of(uploader, path)["state"] == "uploading"
    s3.restart()

    status = wait_state(uploader, path, "done")
    assert stored(s3, "cam2/crash.mp4") == data
    assert status["restarts"] == 1  # NoSuchUpload: once more from part 1, not a lost recording
    assert status["parts"] == 3
    assert status["bytes_sent"] == 5 * MiB + len(data)  # part 1 twice, the rest once
    assert status["history"] == ["pending", "uploading", "done"]
    assert "NoSuchUpload" in status["last_error"]
    assert not path.exists()


def test_missing_bucket_fails_at_once_and_keeps_the_file(make_uploader, tmp_path: Path, caplog) -> None:
    path = recording(tmp_path, "cam3/lost.mp4")
    path.write_bytes(payload(MiB, seed=3))
    uploader = make_uploader(bucket="no-such-bucket")
    uploader.start()
    uploader.on_file_closed(path)

    status = wait_state(uploader, path, "failed")
    assert "NoSuchBucket" in status["last_error"]
    assert (status["attempts"], status["retries"]) == (1, 0)
    assert status["history"] == ["pending", "failed"]
    assert path.read_bytes() == payload(MiB, seed=3)
    assert uploader.status_json()["failures"] == 1
    time.sleep(0.2)  # more rounds: still one attempt, one error logged
    assert status_of(uploader, path)["attempts"] == 1
    assert len([r for r in caplog.records if r.levelno == logging.ERROR and "upload failed" in r.getMessage()]) == 1


@pytest.mark.parametrize("keep_local", [True, False])
def test_keep_local(s3: MotoS3Server, make_uploader, tmp_path: Path, keep_local: bool) -> None:
    path = recording(tmp_path, f"cam4/keep-{keep_local}.mp4")
    data = payload(6 * MiB, seed=4)
    path.write_bytes(data)
    uploader = make_uploader(keep_local=keep_local)
    uploader.start()
    uploader.on_file_closed(path)
    wait_state(uploader, path, "done")

    assert stored(s3, f"cam4/keep-{keep_local}.mp4") == data
    assert path.exists() == keep_local
    # a later start does not upload a kept file again
    assert uploader.stop()
    again = make_uploader(keep_local=keep_local)
    again.start()
    assert again.status_json()["uploads"] == []


def test_empty_recording_is_an_empty_object(s3: MotoS3Server, make_uploader, tmp_path: Path) -> None:
    path = recording(tmp_path, "cam5/empty.mp4")
    path.touch()
    uploader = make_uploader()
    uploader.start()
    uploader.on_file_closed(path)
    status = wait_state(uploader, path, "done")
    assert stored(s3, "cam5/empty.mp4") == b""
    assert status["parts"] == 0


def test_uploader_restart_resumes_and_finds_leftovers(s3: MotoS3Server, make_uploader, tmp_path: Path) -> None:
    path = recording(tmp_path, "cam6/interrupted.mp4")
    data = payload(9 * MiB, seed=6)
    first = make_uploader()
    first.start()
    path.write_bytes(data[: 6 * MiB])
    first.on_file_opened(path)
    wait_for(lambda: status_of(first, path)["parts"] == 1, 10, "part 1")
    assert first.stop()  # the node goes down with the recording open
    append(path, data[6 * MiB :])  # what the recorder wrote last
    marker = path.with_name(path.name + MARKER_SUFFIX)
    assert json.loads(marker.read_text())["upload_id"]

    never = recording(tmp_path, "cam6/never-uploaded.mp4")  # no marker: never started
    never.write_bytes(payload(2 * MiB, seed=7))
    orphan = recording(tmp_path, "cam6/deleted.mp4" + MARKER_SUFFIX)  # its recording is gone
    orphan.write_text(json.dumps({"key": "cam6/deleted.mp4", "upload_id": "x", "parts": []}))

    second = make_uploader()
    second.start()
    status = wait_state(second, path, "done")
    assert stored(s3, "cam6/interrupted.mp4") == data
    assert (status["resumed_parts"], status["parts"], status["restarts"]) == (1, 2, 0)
    assert status["bytes_sent"] == len(data) - PART  # only what part 1 did not hold
    wait_state(second, never, "done")
    assert stored(s3, "cam6/never-uploaded.mp4") == payload(2 * MiB, seed=7)
    assert not orphan.exists()
    assert sorted(p.name for p in (tmp_path / "recordings" / "cam6").iterdir()) == []


def test_files_outside_the_recordings_folder_are_refused(make_uploader, tmp_path: Path) -> None:
    uploader = make_uploader()
    with pytest.raises(ValueError, match="not in the recordings folder"):
        uploader.on_file_closed(tmp_path / "elsewhere.mp4")


def test_bad_endpoint_is_refused_before_any_work() -> None:
    with pytest.raises(ValueError, match="ftp://x"):
        RecordingUploader(UploadSettings(bucket=BUCKET, endpoint="ftp://x"), "recordings")


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "UploadPart")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (client_error("SlowDown", 503), ErrorKind.TRANSIENT),
        (client_error("InternalError", 500), ErrorKind.TRANSIENT),
        (client_error("RequestTimeout", 400), ErrorKind.TRANSIENT),
        (client_error("NoSuchUpload", 404), ErrorKind.UPLOAD_LOST),
        (client_error("NoSuchBucket", 404), ErrorKind.PERMANENT),
        (client_error("AccessDenied", 403), ErrorKind.PERMANENT),
        (client_error("InvalidAccessKeyId", 403), ErrorKind.PERMANENT),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), ErrorKind.TRANSIENT),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), ErrorKind.TRANSIENT),
        (NoCredentialsError(), ErrorKind.PERMANENT),
    ],
)
def test_errors_are_retried_or_not(error: Exception, kind: ErrorKind) -> None:
    assert classify_error(error) is kind
