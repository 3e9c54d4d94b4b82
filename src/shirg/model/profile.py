"""Per-stage timing of one request, opt-in: answering measures, training does not (a CUDA
synchronize per stage per micro-step would serialize the GPU)."""

from __future__ import annotations

import contextlib
import time

import torch


class Stopwatch:
    """Per-stage time. CUDA: events recorded around the stage, read after a synchronize, so GPU
    work is charged to the stage that launched it; CPU: perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                end.synchronize()
                self.times[name] = self.times.get(name, 0.0) + start.elapsed_time(end) / 1e3
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


class NoWatch:
    """A :class:`Stopwatch` that measures nothing and never synchronizes (training's default)."""

    @property
    def times(self) -> dict[str, float]:
        return {}

    @contextlib.contextmanager
    def stage(self, name: str):
        yield


NO_WATCH = NoWatch()
