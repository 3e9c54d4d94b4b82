"""A micro-batcher: concurrent requests with equal settings share one batched model call.

Requests are queued (bounded: a full queue refuses at once, the server answers 503). One worker
thread owns the model: it takes the oldest waiting request, then gathers further waiting requests
with the same key (mode + generation + selection settings) until ``max_batch`` are gathered or
``wait_s`` has passed since it took the first, and runs them as one call. Requests with another
key keep their place for the next round, so the oldest request always goes next. A batch whose
call fails is retried one request at a time, so a bad request fails alone; the worker never dies.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests already; retry later."""


@dataclass
class Job:
    key: Hashable
    payload: Any
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    batchable: bool = True  # False: always run alone (e.g. sampling, whose draws depend on the batch)


RunFn = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


class MicroBatcher:
    """``run(key, payloads) -> results`` (one per payload, in order) is called on the worker thread."""

    def __init__(self, run: RunFn, max_batch: int = 8, wait_s: float = 0.01, max_queue: int = 64) -> None:
        if max_batch < 1 or max_queue < 1 or wait_s < 0:
            raise ValueError(f"max_batch {max_batch} and max_queue {max_queue} must be >= 1, wait_s {wait_s} >= 0")
        self._run = run
        self.max_batch, self.wait_s, self.max_queue = max_batch, wait_s, max_queue
        self._pending: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        # statistics (read by /healthz and /metrics)
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.completed = 0
        self.failed = 0
        self.rejected = 0
        self.cancelled = 0

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="shirg-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._cond:  # whatever is still queued will never run
            while self._pending:
                job = self._pending.popleft()
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(RuntimeError("the server is shutting down"))

    # ------------------------------------------------------------------ submitting
    def submit(self, key: Hashable, payload: Any, batchable: bool = True) -> Future:
        """Queue one request; its Future gets the result. Raises :class:`QueueFull` when full."""
        job = Job(key=key, payload=payload, batchable=batchable)
        with self._cond:
            if self._stop or self._thread is None:
                raise RuntimeError("the batcher is not running")
            if len(self._pending) >= self.max_queue:
                self.rejected += 1
                raise QueueFull(f"{len(self._pending)} requests are waiting (limit {self.max_queue})")
            self._pending.append(job)
            self._cond.notify_all()
        return job.future

    def queue_depth(self) -> int:
        with self._cond:
            return len(self._pending)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            sizes = dict(sorted(self.batch_sizes.items()))
            batches = sum(sizes.values())
            return {
                "queue_depth": len(self._pending),
                "max_queue": self.max_queue,
                "max_batch": self.max_batch,
                "batch_wait_ms": self.wait_s * 1e3,
                "batches": batches,
                "batch_sizes": {str(k): v for k, v in sizes.items()},
                "mean_batch_size": (sum(k * v for k, v in sizes.items()) / batches) if batches else 0.0,
                "completed": self.completed,
                "failed": self.failed,
                "rejected_queue_full": self.rejected,
                "cancelled": self.cancelled,
            }

    # ------------------------------------------------------------------ the worker
    def _take_matching(self, batch: list[Job]) -> None:
        """Move waiting jobs with the batch's key into it (in arrival order), up to max_batch."""
        key = batch[0].key
        kept: collections.deque[Job] = collections.deque()
        while self._pending:
            job = self._pending.popleft()
            if len(batch) < self.max_batch and job.batchable and job.key == key:
                batch.append(job)
            else:
                kept.append(job)
        self._pending = kept

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while True:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return None
                first = self._pending.popleft()
                if first.future.cancelled():
                    self.cancelled += 1
                    continue
                batch = [first]
                if not first.batchable or self.max_batch == 1:
                    return batch
                deadline = time.perf_counter() + self.wait_s
                while True:
                    self._take_matching(batch)
                    left = deadline - time.perf_counter()
                    if len(batch) >= self.max_batch or left <= 0 or self._stop:
                        break
                    self._cond.wait(left)
                return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            # a request whose caller gave up (timeout) before its batch started is dropped
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]
            with self._cond:
                self.cancelled += len(batch) - len(live)
            if live:
                self._execute(live)

    def _execute(self, batch: list[Job]) -> None:
        try:
            results = list(self._run(batch[0].key, [j.payload for j in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except BaseException as e:  # noqa: BLE001 - a failing call must never stop the worker
            if len(batch) == 1:
                self._finish(batch, error=e)
                return
            log.debug("a batch of %d failed (%r); running its requests one at a time", len(batch), e)
            for job in batch:
                self._execute([job])
            return
        with self._cond:
            self.batch_sizes[len(batch)] += 1
            self.completed += len(batch)
        for job, result in zip(batch, results, strict=True):
            job.future.set_result(result)

    def _finish(self, batch: list[Job], error: BaseException) -> None:
        with self._cond:
            self.batch_sizes[len(batch)] += 1
            self.failed += len(batch)
        for job in batch:
            job.future.set_exception(error)
