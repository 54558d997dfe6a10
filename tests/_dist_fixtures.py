"""Process groups for CPU tests of distributed code: a free port and spawned gloo workers that report back."""

from __future__ import annotations

import socket
from typing import Any, Callable

import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the rendezvous of one test)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_collect(worker: Callable[..., None], nprocs: int, *args: Any) -> dict[int, Any]:
    """Run ``worker(rank, port, results, *args)`` in ``nprocs`` processes; return what each rank
    stored in ``results[rank]``, as a plain dict."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(free_port(), results, *args), nprocs=nprocs, join=True)
        return dict(results)
