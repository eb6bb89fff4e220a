"""`ThreadStage`: a named thread that works until it is stopped and sleeps while idle.

The device worker, each stream's encoder, the quality sampler and a looping background video
are stages. A stage overrides `step()` (one round of work; True when it did something, so the
next round starts at once) or, for a paced loop, `run()` itself, using `stopping` and
`sleep()`. `wake()` ends an idle wait early (a frame arrived). An exception escaping `step()`
is logged once per kind of error and counted, and the stage carries on: one bad round never
ends a stage. `start` and `stop` are idempotent; `stop` joins with a time limit and says so
when the thread did not end.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class ThreadStage:
    idle_wait_s: float = 0.5
    """How long an idle stage sleeps before it looks for work again without being woken."""

    def __init__(self, name: str):
        self.name = name
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        """Rounds that raised (each kind of error is logged once)."""
        self._logged: set[str] = set()

    # ---- the owner ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to end and wait up to `timeout`; False when it is still running."""
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        self._stopping.set()
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            log.error("%s did not stop within %.1f s", self.name, timeout)
            return False
        return True

    def wake(self) -> None:
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---- the thread -----------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def halt(self) -> None:
        """End the loop from inside the stage (what it serves is going away)."""
        self._stopping.set()

    def sleep(self, seconds: float) -> bool:
        """Wait up to `seconds` or until stopped; True when the stage should stop."""
        return self._stopping.wait(seconds)

    def step(self) -> bool:
        """One round of work; True when there was work (look again at once)."""
        raise NotImplementedError

    def run(self) -> None:
        """The thread's loop: rounds of `step`, an idle wait between empty ones."""
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                busy = self.step()
            except Exception as exc:
                self.failed(exc)
                busy = False
            if not busy:
                self._wake.wait(self.idle_wait_s)

    def failed(self, exc: Exception) -> None:
        """A round raised `exc`: count it, log the first of each kind with its traceback."""
        self.errors += 1
        kind = type(exc).__name__
        if kind not in self._logged:
            self._logged.add(kind)
            log.error("%s: a round failed (%s); further %s errors are counted, not logged", self.name, exc, kind, exc_info=exc)

    def _main(self) -> None:
        try:
            self.run()
        except Exception as exc:  # run() overridden and raised: the thread ends, said once
            log.error("%s ended on an error", self.name, exc_info=exc)
