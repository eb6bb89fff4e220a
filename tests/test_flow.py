"""The shared primitives: a bounded mailbox that counts what it drops, a thread stage that
survives a failing round and stops when asked, backoff with full jitter."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from livegen.flow.backoff import Backoff
from livegen.flow.mailbox import Mailbox
from livegen.flow.stage import ThreadStage
from tests.conftest import wait_until


async def test_a_full_mailbox_drops_its_oldest_and_counts_it():
    box: Mailbox[int] = Mailbox(2)
    for item in (1, 2, 3):
        box.put(item)
    assert box.dropped == 1 and len(box) == 2
    assert [await box.get(), await box.get()] == [2, 3]
    waiting = asyncio.ensure_future(box.get())
    await asyncio.sleep(0.01)
    box.put(4)
    assert await waiting == 4
    box.put(5)
    assert box.clear() == 1 and box.dropped == 2
    box.close()
    box.put(6)  # ignored once closed
    assert await box.get() is None and box.closed
    with pytest.raises(ValueError):
        Mailbox(0)


async def test_a_closed_mailbox_wakes_its_consumer():
    box: Mailbox[int] = Mailbox(1)
    waiting = asyncio.ensure_future(box.get())
    await asyncio.sleep(0.01)
    box.close()
    assert await asyncio.wait_for(waiting, 1) is None


class Counting(ThreadStage):
    idle_wait_s = 0.01

    def __init__(self, fail_every: int = 0):
        super().__init__("livegen-test-stage")
        self.rounds = 0
        self.fail_every = fail_every

    def step(self) -> bool:
        self.rounds += 1
        if self.fail_every and self.rounds % self.fail_every == 0:
            raise RuntimeError("a bad round")
        return False


async def test_a_stage_survives_failing_rounds_logs_once_and_stops(caplog):
    stage = Counting(fail_every=2)
    with caplog.at_level(logging.ERROR, logger="livegen.flow.stage"):
        stage.start()
        stage.start()  # idempotent: still one thread
        await wait_until(lambda: stage.errors >= 3, timeout=5)
        assert stage.running
        assert [t.name for t in threading.enumerate()].count("livegen-test-stage") == 1
        assert stage.stop(timeout=2) and not stage.running
        assert stage.stop() is True  # idempotent
    assert len([r for r in caplog.records if "a round failed" in r.getMessage()]) == 1


def test_a_stage_is_woken_early():
    stage = Counting()
    stage.idle_wait_s = 30.0
    stage.start()
    try:
        before = stage.rounds
        stage.wake()
        deadline = threading.Event()
        for _ in range(100):
            if stage.rounds > before:
                break
            deadline.wait(0.01)
        assert stage.rounds > before
    finally:
        assert stage.stop(timeout=2)


def test_backoff_grows_to_its_cap_with_full_jitter_and_resets():
    draws = iter([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0])
    backoff = Backoff(base_s=1.0, cap_s=8.0, rng=lambda: next(draws))
    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.next_delay() == 4.0  # a uniform draw under the cap: full jitter
    backoff.reset()
    assert backoff.attempt == 0 and backoff.ceiling() == 1.0 and backoff.next_delay() == 0.0
    real = Backoff(base_s=0.5, cap_s=2.0)
    assert all(0.0 <= real.next_delay() <= 2.0 for _ in range(50))
    with pytest.raises(ValueError):
        Backoff(base_s=2.0, cap_s=1.0)
