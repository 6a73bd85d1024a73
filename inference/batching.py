"""Dynamic micro-batching: concurrent requests share one model pass.

Each request hands its preprocessed rows to `MicroBatcher.submit` and waits on a future. One worker thread takes
the first waiting row, then keeps collecting until `max_batch_size` rows are in hand or `wait_ms` has passed since
that first row, and runs them as one batch, in arrival order. Under load the queue fills while the previous batch
runs, so batches grow by themselves; a lone request waits at most `wait_ms`.

- Per-request errors: when a batch raises, its rows run again one at a time, so a row that breaks the model fails
  only its own request.
- Cancellation: a request passes a `threading.Event`; a row whose event is set before the worker takes it never
  enters a batch, and its future raises `PredictionCancelled` (the API sets the event when the client disconnects).
- The answers do not depend on the batch: the model is in eval mode, MC-dropout masks are shared by every image of
  a batch (inference.uncertainty), and tests check batched against one-by-one to 1e-5 in probability.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from settings import Settings

log = logging.getLogger(__name__)

R = TypeVar("R")


class PredictionCancelled(RuntimeError):
    """The request was withdrawn (its client went away) before its images reached the model."""


@dataclass(frozen=True)
class BatchPolicy:
    enabled: bool = False
    max_batch_size: int = 32
    wait_ms: float = 2.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("MAX_BATCH_SIZE must be at least 1.")
        if self.wait_ms < 0:
            raise ValueError("BATCH_WAIT_MS cannot be negative.")

    @classmethod
    def from_settings(cls, settings: Settings) -> BatchPolicy:
        return cls(
            enabled=settings.enable_batching, max_batch_size=settings.max_batch_size, wait_ms=settings.batch_wait_ms
        )


@dataclass
class _Pending(Generic[R]):
    row: np.ndarray
    future: Future[R]
    cancel: threading.Event | None


class MicroBatcher(Generic[R]):
    """Groups rows from many threads into batches for `run_batch` ((B, ...) array -> B results, in order)."""

    def __init__(self, run_batch: Callable[[np.ndarray], Sequence[R]], policy: BatchPolicy, name: str = "batcher"):
        self._run_batch = run_batch
        self.policy = policy
        self._queue: queue.SimpleQueue[_Pending[R] | None] = queue.SimpleQueue()
        self._closed = False
        self.batches_run = 0  # counters for tests and benchmarks
        self.rows_run = 0
        self._worker = threading.Thread(target=self._loop, name=name, daemon=True)
        self._worker.start()

    def submit(self, row: np.ndarray, cancel: threading.Event | None = None) -> Future[R]:
        """Queue one row (without the batch axis); the future holds its result or its own error."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        future: Future[R] = Future()
        self._queue.put(_Pending(row, future, cancel))
        return future

    def run(self, rows: np.ndarray, cancel: threading.Event | None = None) -> list[R]:
        """Submit every row of a (B, ...) batch and wait for all of them; the first error of a row is raised."""
        futures = [self.submit(row, cancel) for row in rows]
        return [future.result() for future in futures]

    def close(self) -> None:
        """Finish the rows already queued, then stop the worker."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._worker.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            pending, stop = self._collect(first)
            self._run(pending)
            if stop:
                return

    def _collect(self, first: _Pending[R]) -> tuple[list[_Pending[R]], bool]:
        """The first row plus whatever arrives before the batch is full or the wait is over."""
        pending = [first]
        deadline = time.monotonic() + self.policy.wait_ms / 1000
        while len(pending) < self.policy.max_batch_size:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                return pending, True
            pending.append(item)
        return pending, False

    def _run(self, pending: list[_Pending[R]]) -> None:
        live = [item for item in pending if self._still_wanted(item)]
        if not live:
            return
        try:
            results = self._run_batch(np.stack([item.row for item in live]))
        except Exception:  # the model can raise anything: retry row by row so only the guilty request fails
            log.warning("a batch of %d failed; running its rows one at a time", len(live), exc_info=True)
            for item in live:
                self._run_alone(item)
            return
        self.batches_run += 1
        self.rows_run += len(live)
        for item, result in zip(live, results, strict=True):
            item.future.set_result(result)

    def _run_alone(self, item: _Pending[R]) -> None:
        try:
            item.future.set_result(self._run_batch(item.row[None])[0])
        except Exception as exc:  # as above: whatever the model raised belongs to this request alone
            item.future.set_exception(exc)

    @staticmethod
    def _still_wanted(item: _Pending[R]) -> bool:
        if item.cancel is not None and item.cancel.is_set():
            item.future.set_exception(PredictionCancelled("the request was cancelled before it reached the model"))
            return False
        return item.future.set_running_or_notify_cancel()
