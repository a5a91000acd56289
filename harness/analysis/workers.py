"""Worker processes for the analysis' independent refits (bootstrap chunks, backtest cut-offs): forked, so the
data need no pickling on the way in, and results come back in input order, so any number of workers gives the
same numbers as one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def worker_count(jobs: int) -> int:
    """jobs, or for jobs <= 0 every core this process may run on (a SLURM allocation, a taskset)."""
    if jobs > 0:
        return jobs
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def can_fork() -> bool:
    """Whether this process can start forked workers (a daemonic process may not start children)."""
    return "fork" in mp.get_all_start_methods() and not mp.current_process().daemon


_TASK: list[tuple[Callable[[Any], Any], Sequence[Any]]] = []  # what forked workers inherit (fork_map)


def _call(i: int) -> Any:
    fn, items = _TASK[-1]
    return fn(items[i])


def fork_map(fn: Callable[[Any], Any], items: Sequence[Any], jobs: int) -> list[Any]:
    """[fn(x) for x in items], on up to worker_count(jobs) forked processes where that helps. The workers inherit
    fn and items at the fork (closures and large arrays need no pickling); only indices and results cross."""
    n = min(worker_count(jobs), len(items))
    if n <= 1 or not can_fork():
        return [fn(x) for x in items]
    _TASK.append((fn, items))
    try:
        with ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("fork")) as pool:
            return list(pool.map(_call, range(len(items))))
    finally:
        _TASK.pop()
