"""`RateLimitedLog`: a failure that may repeat on every frame is logged at most once per
interval, with how many happened since, so a broken effect or encoder cannot flood the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

LOG_INTERVAL_S = 10.0


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self._log = logger
        self.interval_s = interval_s
        self._clock = clock
        self._logged_at: float | None = None
        self.total = 0
        """Failures reported, logged or not."""
        self._since = 0

    def failure(self, message: str, *args: object, exc_info: bool | BaseException = True) -> bool:
        """Count one failure; log it (with the traceback, by default) when the last line is
        `interval_s` old or there was none. True when it was logged."""
        self.total += 1
        self._since += 1
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < self.interval_s:
            return False
        self._log.error("%s (%d failure(s) since the last report, %d in all)", message % args if args else message,
                        self._since, self.total, exc_info=exc_info)
        self._logged_at, self._since = now, 0
        return True
