"""Process memory measurement: RSS now, and its peak while a block of work runs (CPU runs)."""

from __future__ import annotations

import ctypes
import gc
import resource
import threading
from pathlib import Path

import torch


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_report(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "gpu_allocated_mb": torch.cuda.memory_allocated(device) / 2**20}
    return {"rss_mb": rss_bytes() / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so RSS starts clean."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: RSS may keep pages freed by earlier modes, so growth reads lower


class PeakRss:
    """Peak resident set size of this process while the block runs (Linux; CPU runs).

    A background thread reads /proc/self/statm every ``interval`` seconds; spikes shorter than
    that can be missed. ``before`` is read after a garbage collection and malloc_trim, so
    ``peak - before`` approximates what the mode's activations and KV cache add on top of the
    weights already resident (allocator caching can make it read high or low by a few MiB).
    """

    def __init__(self, interval: float = 0.005, release: bool = True) -> None:
        self.interval = interval
        self.release = release
        self.before = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRss:
        if self.release:
            release_freed_memory()
        self.before = self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
