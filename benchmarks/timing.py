"""Timing helpers: CUDA events after warm-up, median of repeats; host clock on the CPU."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    """Median and spread of repeated runs, in milliseconds, plus peak GPU memory in MB (0 on CPU)."""

    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    peak_mb: float = 0.0


def time_fn(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 10,
            device: torch.device | str = "cuda") -> Timing:
    """Run ``fn`` ``warmup`` times, then time ``repeats`` calls one by one."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else 0.0
    return Timing(statistics.median(times), min(times), max(times), repeats, peak)
