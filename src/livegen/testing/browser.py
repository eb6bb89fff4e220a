"""A small headless-Chromium driver for the browser tests, speaking the DevTools protocol.

It launches Debian's Chromium (``LIVEGEN_CHROMIUM`` or ``chromium`` on PATH) with a fake camera
and microphone and a throw-away profile, connects to the browser's DevTools websocket with
aiohttp and opens pages as flattened target sessions::

    async with await Browser.launch() as browser:
        page = await browser.new_page()
        await page.navigate(f"{url}/?autostart=1")
        await page.wait_for("window.livegen?.state === 'publishing'", timeout=20)
        width = await page.evaluate("document.querySelector('video').videoWidth")

Every wait is bounded. Each page keeps the console messages and uncaught exceptions it saw, so a
failing test can say what the page complained about (`Page.problems()`). `Browser.close()` ends
the Chromium process group this driver started and removes its profile folder.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import aiohttp

log = logging.getLogger(__name__)

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    # WebRTC on loopback only: the node under test offers 127.0.0.1 candidates
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    # Pages opened side by side must keep painting, or a hidden one stops feeding its canvas.
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--window-size=1280,900",
    "--remote-debugging-port=0",
)
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class BrowserError(Exception):
    """Chromium could not be started, went away, or answered a command with an error."""


class JavaScriptError(BrowserError):
    """An evaluated expression threw; the message carries the exception's text."""


def find_chromium() -> str | None:
    """Path of the Chromium to drive: ``LIVEGEN_CHROMIUM``, else ``chromium`` on PATH, else None."""
    configured = os.environ.get("LIVEGEN_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else shutil.which(configured)
    return shutil.which("chromium")


@dataclass(frozen=True)
class ConsoleEntry:
    level: str  # console API type ("log", "warning", "error", …), "exception" or a log source
    text: str

    def __str__(self) -> str:
        return f"[{self.level}] {self.text}"


class Browser:
    """One headless Chromium process and its DevTools connection; use `launch()` to get one."""

    def __init__(self, process: asyncio.subprocess.Process, profile: Path, command_timeout: float):
        self._process = process
        self._profile = profile
        self._command_timeout = command_timeout
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._stderr: deque[str] = deque(maxlen=40)
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # ---- life cycle -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the Chromium process is still alive."""
        return self._process.returncode is None

    @property
    def profile_dir(self) -> Path:
        """The throw-away profile folder; removed by `close()`."""
        return self._profile

    @classmethod
    async def launch(
        cls,
        executable: str | None = None,
        *,
        extra_args: tuple[str, ...] = (),
        start_timeout: float = 20.0,
        command_timeout: float = 15.0,
    ) -> Browser:
        """Start Chromium and connect to it; raises `BrowserError` when either fails in time."""
        executable = executable or find_chromium()
        if executable is None:
            raise BrowserError("no Chromium found: install chromium or set LIVEGEN_CHROMIUM")
        profile = Path(tempfile.mkdtemp(prefix="livegen-chromium-"))
        try:
            process = await asyncio.create_subprocess_exec(
                executable,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                *extra_args,
                "about:blank",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group: close() ends renderers too
            )
        except BaseException:
            shutil.rmtree(profile, ignore_errors=True)
            raise
        browser = cls(process, profile, command_timeout)
        try:
            async with asyncio.timeout(start_timeout):
                ws_url = await browser._read_devtools_url()
                await browser._connect(ws_url)
        except BaseException as exc:
            await browser.close()
            if isinstance(exc, TimeoutError):
                raise BrowserError(f"Chromium did not start within {start_timeout} s{browser._stderr_tail()}") from None
            raise
        return browser

    async def _read_devtools_url(self) -> str:
        assert self._process.stderr is not None
        while True:
            raw = await self._process.stderr.readline()
            if not raw:
                code = await self._process.wait()
                raise BrowserError(f"Chromium exited with status {code} before DevTools listened{self._stderr_tail()}")
            line = raw.decode(errors="replace").rstrip()
            self._stderr.append(line)
            found = _LISTENING.search(line)
            if found:
                self._tasks.append(asyncio.create_task(self._drain_stderr(), name="chromium-stderr"))
                return found.group(1)

    async def _drain_stderr(self) -> None:
        # Keep reading so Chromium never blocks on a full pipe; the tail goes into error messages.
        assert self._process.stderr is not None
        while raw := await self._process.stderr.readline():
            self._stderr.append(raw.decode(errors="replace").rstrip())

    async def _connect(self, ws_url: str) -> None:
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(ws_url, max_msg_size=64 * 1024 * 1024, heartbeat=None)
        self._tasks.append(asyncio.create_task(self._read_messages(), name="chromium-devtools"))

    async def close(self) -> None:
        """End Chromium (its whole process group) and remove its profile; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.send("Browser.close")
        if self._ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._ws.close()
        if self._http is not None:
            await self._http.close()
        await self._stop_process()
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(2):
                await asyncio.gather(*self._tasks, return_exceptions=True)
        self._fail_pending(BrowserError("the browser was closed"))
        shutil.rmtree(self._profile, ignore_errors=True)

    async def _stop_process(self) -> None:
        process = self._process
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
            try:
                async with asyncio.timeout(grace):
                    await process.wait()
            except TimeoutError:
                continue
            # The browser is gone; leftovers of its group (a zygote) go with a last SIGKILL.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            return
        log.warning("Chromium (pid %s) did not exit after SIGKILL", process.pid)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- protocol -------------------------------------------------------------------------
    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one DevTools command (to a page when `session` is given) and return its result."""
        if self._closed and method != "Browser.close":
            raise BrowserError("the browser is closed")
        if self._ws is None or self._ws.closed:
            raise BrowserError(f"the DevTools connection is gone{self._stderr_tail()}")
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message["id"]] = future
        try:
            await self._ws.send_str(json.dumps(message))
            async with asyncio.timeout(timeout or self._command_timeout):
                return await future
        except TimeoutError:
            raise BrowserError(f"{method} got no answer within {timeout or self._command_timeout} s") from None
        finally:
            self._pending.pop(message["id"], None)

    async def _read_messages(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                if "id" in data:
                    future = self._pending.get(data["id"])
                    if future is not None and not future.done():
                        if "error" in data:
                            error = data["error"]
                            future.set_exception(BrowserError(f"{error.get('message')} ({error.get('data', '')})"))
                        else:
                            future.set_result(data.get("result", {}))
                elif "method" in data:
                    self._dispatch(data["method"], data.get("params", {}), data.get("sessionId"))
        finally:
            self._fail_pending(BrowserError(f"the DevTools connection closed{self._stderr_tail()}"))

    def _dispatch(self, method: str, params: dict[str, Any], session: str | None) -> None:
        if method == "Target.detachedFromTarget":
            page = self._pages.pop(params.get("sessionId", ""), None)
            if page is not None:
                page._detached("the page was closed or detached")
            return
        page = self._pages.get(session or "")
        if page is not None:
            page._on_event(method, params)

    def _fail_pending(self, error: BrowserError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    def _stderr_tail(self) -> str:
        lines = [line for line in self._stderr if line.strip()][-8:]
        return ("; Chromium said:\n  " + "\n  ".join(lines)) if lines else ""

    # ---- pages ----------------------------------------------------------------------------
    async def new_page(self, url: str = "about:blank") -> Page:
        """Open a page (in its own window), attached with console and exception reporting on."""
        # A window of its own: a background tab is hidden, and hidden pages stop painting frames.
        created = await self.send("Target.createTarget", {"url": "about:blank", "newWindow": True})
        attached = await self.send("Target.attachToTarget", {"targetId": created["targetId"], "flatten": True})
        page = Page(self, created["targetId"], attached["sessionId"])
        self._pages[page.session] = page
        for domain in ("Page.enable", "Runtime.enable", "Log.enable", "Inspector.enable"):
            await page.send(domain)
        if url != "about:blank":
            await page.navigate(url)
        return page


class Page:
    """A tab: navigate, evaluate JavaScript, wait for a condition, take screenshots."""

    def __init__(self, browser: Browser, target_id: str, session: str):
        self.browser = browser
        self.target_id = target_id
        self.session = session
        self.console: list[ConsoleEntry] = []
        self._load: asyncio.Future[None] | None = None
        self._gone: str | None = None

    async def send(
        self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        if self._gone is not None:
            raise BrowserError(f"cannot {method}: {self._gone}")
        return await self.browser.send(method, params, session=self.session, timeout=timeout)

    # ---- events ---------------------------------------------------------------------------
    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_describe(arg) for arg in params.get("args", []))
            self.console.append(ConsoleEntry(params.get("type", "log"), text))
        elif method == "Runtime.exceptionThrown":
            self.console.append(ConsoleEntry("exception", _exception_text(params["exceptionDetails"])))
        elif method == "Log.entryAdded":
            entry = params["entry"]
            text = entry.get("text", "") + (f" ({entry['url']})" if entry.get("url") else "")
            self.console.append(ConsoleEntry(f"{entry.get('source', 'log')}-{entry.get('level', 'info')}", text))
        elif method == "Page.loadEventFired":
            if self._load is not None and not self._load.done():
                self._load.set_result(None)
        elif method in ("Inspector.targetCrashed", "Inspector.detached"):
            self._detached(f"the page {'crashed' if method.endswith('Crashed') else 'was detached'}")

    def _detached(self, reason: str) -> None:
        self._gone = reason
        self.console.append(ConsoleEntry("browser", reason))
        if self._load is not None and not self._load.done():
            self._load.set_exception(BrowserError(reason))

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and failed loads, oldest first."""
        quiet = ("log", "info", "debug", "verbose", "dir", "table", "trace")
        return [str(e) for e in self.console if not any(e.level == q or e.level.endswith("-" + q) for q in quiet)]

    def report(self, limit: int = 30) -> str:
        """The page's problems, one per line, for an assertion message."""
        found = self.problems()[-limit:]
        return "console problems:\n  " + "\n  ".join(found) if found else "no console problems"

    # ---- actions --------------------------------------------------------------------------
    async def navigate(self, url: str, timeout: float = 20.0) -> None:
        """Load `url` and wait for its load event."""
        loop = asyncio.get_running_loop()
        self._load = loop.create_future()
        result = await self.send("Page.navigate", {"url": url}, timeout=timeout)
        if result.get("errorText"):
            raise BrowserError(f"navigating to {url} failed: {result['errorText']}")
        try:
            async with asyncio.timeout(timeout):
                await self._load
        except TimeoutError:
            raise BrowserError(f"{url} did not finish loading within {timeout} s") from None

    async def evaluate(self, expression: str, await_promise: bool = True, timeout: float = 15.0) -> Any:
        """The JSON value of a JavaScript expression (awaited when it is a promise)."""
        result = await self.send(
            "Runtime.evaluate",
            {
                "expression": expression,
                "returnByValue": True,
                "awaitPromise": await_promise,
                "userGesture": True,
            },
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise JavaScriptError(f"{expression!r} threw: {_exception_text(result['exceptionDetails'])}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 10.0, interval: float = 0.1) -> Any:
        """Evaluate `expression` until it is truthy and return that value.

        An expression that throws counts as not yet true (the page may still be loading); on
        timeout the error says what the expression last returned or threw.
        """
        last: str = "nothing"
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        value = await self.evaluate(expression)
                    except JavaScriptError as exc:
                        last = str(exc)
                    else:
                        if value:
                            return value
                        last = f"returned {json.dumps(value)}"
                    await asyncio.sleep(interval)
        except TimeoutError:
            raise TimeoutError(f"{expression!r} was not true within {timeout} s (it {last})") from None

    async def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """Save a PNG of the page's viewport to `path` and return it."""
        result = await self.send("Page.captureScreenshot", {"format": "png"}, timeout=20.0)
        target = Path(path)
        target.write_bytes(base64.b64decode(result["data"]))
        return target

    async def close(self) -> None:
        """Close this tab."""
        if self._gone is None:
            await self.browser.send("Target.closeTarget", {"targetId": self.target_id})
            self._gone = "the page was closed"


def _describe(value: dict[str, Any]) -> str:
    if "value" in value:
        return value["value"] if isinstance(value["value"], str) else json.dumps(value["value"])
    return value.get("description") or value.get("unserializableValue") or value.get("type", "?")


def _exception_text(details: dict[str, Any]) -> str:
    exception = details.get("exception") or {}
    text = exception.get("description") or details.get("text") or "unknown exception"
    where = details.get("url") or ""
    if where:
        text += f" (at {where}:{details.get('lineNumber', 0) + 1})"
    return text
