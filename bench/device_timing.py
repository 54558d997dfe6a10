"""What the benchmark scripts share for timing work on a device: a synchronise that is a no-op
on CPU, and torch.profiler's table of the operators that took the most time."""

from __future__ import annotations

from typing import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def top_operators(run: Callable[[], object], device: torch.device, row_limit: int) -> str:
    """torch.profiler's top `row_limit` operators of one `run()`, by their own (self) GPU time on
    CUDA and CPU time elsewhere: where the time of that call goes, each kernel counted once."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run()
        sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=row_limit)
