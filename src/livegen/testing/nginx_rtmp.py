"""nginx-rtmp as a subprocess: an RTMP server on 127.0.0.1 for the relay tests and for
`livegen bench relay`.

`NginxRtmp` runs Debian's nginx with libnginx-mod-rtmp (scripts/install-nginx-rtmp.sh) on a free
127.0.0.1 port with a generated config: application `live`, no http, everything in the folder it
is given. `nginx_missing` says why it cannot run here (None when it can).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")

CONFIG = """\
load_module {module};
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 128; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            record off;
            wait_key on;
            wait_video on;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def nginx_missing() -> str | None:
    """Why nginx-rtmp cannot run here, or None."""
    if not os.path.exists(NGINX):
        return "nginx is not installed"
    if not RTMP_MODULE.exists():
        return f"the nginx RTMP module ({RTMP_MODULE}) is not installed"
    return None


class NginxRtmp:
    """An nginx-rtmp server on 127.0.0.1:`port`; `kill` and `start` again keep the port."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "nginx.conf"
        self.config.write_text(CONFIG.format(module=RTMP_MODULE, dir=folder, port=self.port))

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def url(self, key: str = "test", app: str = "live") -> str:
        return f"rtmp://127.0.0.1:{self.port}/{app}/{key}"

    def start(self, timeout: float = 10.0) -> None:
        error_log = self.folder / "error.log"
        self._process = subprocess.Popen(
            [NGINX, "-p", f"{self.folder}/", "-c", str(self.config), "-e", str(error_log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = error_log.read_text() if error_log.exists() else ""
                raise RuntimeError(f"nginx exited with {self._process.returncode}: {log[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"nginx did not listen on {self.port} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: connections drop at once, as when a server crashes."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
