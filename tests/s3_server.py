"""A real S3 endpoint for tests: moto's standalone server in a subprocess on 127.0.0.1.

`MotoS3Server(buckets=[...])` starts it on a free port; `kill()` ends it the hard way (SIGKILL:
connections drop mid-request, like a crashed server) and `restart()` starts it again on the same
port. moto keeps everything in memory, so a restarted server has lost its objects and its
multipart uploads, as a real server that crashed mid-upload would have lost the uploads. A real
server keeps its buckets, though, so the buckets named here are created before the server
listens, each time: a client never sees the restarted server without them.

Run as a script, this file is that subprocess: it seeds the buckets through a throwaway in-process
moto server on an ephemeral port (moto's state is per process, shared by both), then serves with
`moto.server.main`, exactly what `python -m moto.server -H HOST -p PORT` runs.

`moto_missing()` says why the server cannot run here (None when it can); tests skip on it, and
fail instead under CI=true.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FAKE_CREDENTIALS = {
    # distinctive, so a test can show they appear in no log or status
    "AWS_ACCESS_KEY_ID": "AKIAFAKETESTKEY00001",
    "AWS_SECRET_ACCESS_KEY": "fake-secret-never-to-be-logged",
}
REGION = "us-east-1"
START_TIMEOUT_S = 20.0


def moto_missing() -> str | None:
    for module in ("moto", "flask", "boto3"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[test]')"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class MotoS3Server:
    def __init__(self, buckets: Sequence[str] = (), host: str = "127.0.0.1", port: int | None = None):
        self.buckets = list(buckets)
        self.host = host
        self.port = port or free_port(host)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        env = {**os.environ, **FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": REGION}
        command = [sys.executable, str(Path(__file__).resolve()), self.host, str(self.port), *self.buckets]
        # a file, not a pipe: werkzeug logs every request, and a pipe nobody reads would fill
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._log.seek(0)
                output = self._log.read().decode(errors="replace")
                raise RuntimeError(f"moto server exited with {self._process.returncode}: {output[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"moto server did not listen on {self.endpoint} within {START_TIMEOUT_S:.0f} s")

    def kill(self) -> None:
        """End the server at once (SIGKILL), dropping every connection and all its state."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def client(self) -> Any:
        """A boto3 S3 client for the test's own checks."""
        import boto3

        return boto3.session.Session(
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        ).client("s3", endpoint_url=self.endpoint)

    def __enter__(self) -> MotoS3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def _serve(host: str, port: int, buckets: Sequence[str]) -> None:
    import boto3
    from moto.server import ThreadedMotoServer, main

    if buckets:
        seeder = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        seeder.start()
        seed_host, seed_port = seeder.get_host_and_port()
        s3 = boto3.session.Session(region_name=REGION).client("s3", endpoint_url=f"http://{seed_host}:{seed_port}")
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        s3.close()
        seeder.stop()
    main(["-H", host, "-p", str(port)])


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
