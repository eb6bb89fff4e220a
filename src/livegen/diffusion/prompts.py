"""Prompt embeddings: cached, encoded beside the frame path, swapped in at a frame boundary.

`PromptBank` owns one small executor that runs the text encoder and an LRU cache of embeddings
by prompt text, so a prompt seen before is ready at once. `Conditioning` is one stream's view:
`request()` (any thread, e.g. the event loop on a PATCH) starts encoding and returns at once;
`current()` (the worker thread, once per frame) keeps answering the old embeddings until the
new ones are ready, then swaps to them between two frames — the video never waits for the text
encoder. A request may blend two prompts: the embeddings are interpolated by its weight.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptRequest:
    prompt: str
    prompt2: str | None = None
    weight: float = 0.0
    """Share of `prompt2` in the blend (0: only `prompt`)."""

    @property
    def prompts(self) -> tuple[str, ...]:
        return (self.prompt,) if self.prompt2 is None or self.weight == 0.0 else (self.prompt, self.prompt2)


class PromptBank:
    """Encodes prompts with `encode` (text → (1, tokens, dim) embeddings) on its own thread."""

    def __init__(self, encode: Callable[[str], torch.Tensor], capacity: int = 64, name: str = "livegen-prompts"):
        self._encode = encode
        self._capacity = capacity
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Future[torch.Tensor]] = OrderedDict()
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(1, thread_name_prefix=name)

    def embedding(self, prompt: str) -> Future[torch.Tensor]:
        """The embeddings of `prompt`: a finished future when cached, else one being encoded."""
        with self._lock:
            future = self._cache.get(prompt)
            if future is not None and not (future.done() and future.exception() is not None):
                self._cache.move_to_end(prompt)
                return future
            if self._executor is None:
                raise RuntimeError("the prompt bank is closed")
            future = self._executor.submit(self._run, prompt)
            self._cache[prompt] = future
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
            return future

    def _run(self, prompt: str) -> torch.Tensor:
        # inference mode is per thread: the worker's does not cover this one
        with torch.inference_mode():
            return self._encode(prompt)

    def cached(self, prompt: str) -> bool:
        with self._lock:
            future = self._cache.get(prompt)
        return future is not None and future.done() and future.exception() is None

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
            self._cache.clear()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


class Conditioning:
    """One stream's prompt embeddings: what the frame path uses now, and what replaces it next."""

    def __init__(self, bank: PromptBank, request: PromptRequest):
        self._bank = bank
        self._lock = threading.Lock()
        self._current: torch.Tensor | None = None
        self.current_request: PromptRequest | None = None
        self._pending: tuple[PromptRequest, list[Future[torch.Tensor]]] | None = None
        self.error: str | None = None
        self.swaps = 0
        """How many times new embeddings were swapped in (the first prompt counts)."""
        self.request(request)

    def request(self, request: PromptRequest) -> None:
        """Start encoding `request`; the frame path keeps the old embeddings until it is ready."""
        futures = [self._bank.embedding(p) for p in request.prompts]
        with self._lock:
            self._pending = (request, futures)

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def current(self) -> torch.Tensor | None:
        """The embeddings for this frame, swapping in finished ones; None before the first is ready."""
        with self._lock:
            pending = self._pending
            if pending is None or not all(f.done() for f in pending[1]):
                return self._current
            self._pending = None
        request, futures = pending
        try:
            parts = [f.result() for f in futures]
        except Exception as exc:  # keep the old prompt; say why the new one did not come
            self.error = f"encoding prompt {request.prompt!r} failed: {exc}"
            log.warning("%s", self.error)
            return self._current
        embeddings = parts[0] if len(parts) == 1 else torch.lerp(parts[0], parts[1], request.weight)
        self._current, self.current_request, self.error = embeddings, request, None
        self.swaps += 1
        return embeddings

    def wait(self, timeout: float) -> torch.Tensor | None:
        """`current()` after waiting up to `timeout` s for a pending request (first frame only)."""
        with self._lock:
            pending = self._pending
        if pending is not None:
            for future in pending[1]:
                try:
                    future.result(timeout=timeout)
                except Exception:
                    break
        return self.current()
