"""Where a suite's jobs run: in this process, in local worker processes, or on a Ray cluster.

A suite runs in waves of jobs (:mod:`privbench.bench.waves`, ``docs/scale.md``): one job per
model that is not yet in the store (train it, write it atomically under its content address),
one scoring pass per model (the signals its cells' attacks list, cached beside it), then one
job per cell (load its pool, read the signals, run the attacks, write the run folder). Jobs
only read and write the workspace's store, a folder that every worker must see at the same path
(a shared filesystem on a cluster); the results database is written by the driver alone,
from what the jobs return, so SQLite never sees two writers.

Every executor answers ``map(function, jobs)`` with ``(job, result or exception)`` pairs as the
jobs finish: a job that raises is reported, not fatal, which is how one failing cell leaves the
others running. ``KeyboardInterrupt`` stops the map (queued jobs are cancelled); everything
finished by then is already in the store, so the next ``privbench bench`` resumes.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from privbench.errors import OptionError, PrivbenchError

Job = TypeVar("Job")
Outcome = tuple[Any, Any]
"""``(job, result)``, where a job that raised has its exception as the result."""

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    in_process: bool
    """Jobs run in this very process (they may use objects that cannot be pickled)."""

    def map(self, function: Callable[[Job], Any], jobs: Sequence[Job]) -> Iterator[Outcome]:
        """Run *function* on every job; yield ``(job, result or exception)`` as jobs finish."""
        ...

    def close(self) -> None: ...


class InlineExecutor:
    """One job after the other in this process (``--executor local``, one worker)."""

    in_process = True

    def map(self, function: Callable[[Job], Any], jobs: Sequence[Job]) -> Iterator[Outcome]:
        for job in jobs:
            try:
                result = function(job)
            except Exception as err:  # reported per job: one failure must not stop the rest
                result = err
            yield job, result

    def close(self) -> None:
        pass


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class ProcessExecutor:
    """Up to *max_workers* jobs at once in fresh worker processes on this machine, the CPU's
    threads shared out among them (``--executor local --max-workers N``)."""

    in_process = False

    def __init__(self, max_workers: int) -> None:
        threads = max(1, (os.cpu_count() or 1) // max_workers)
        # spawn, not fork: torch's thread pools and CUDA do not survive a fork.
        self.pool = futures.ProcessPoolExecutor(
            max_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(threads,),
        )

    def map(self, function: Callable[[Job], Any], jobs: Sequence[Job]) -> Iterator[Outcome]:
        pending = {self.pool.submit(function, job): job for job in jobs}
        try:
            for future in futures.as_completed(pending):
                error = future.exception()
                yield pending[future], error if error is not None else future.result()
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Jobs as Ray tasks: one CPU each, and one GPU each when the cluster has GPUs
    (``--executor ray [--address ...]``). Joins a running Ray instance when this process has
    one (``ray.init`` was called) or *address* is given, else starts a local one."""

    in_process = False

    def __init__(self, address: str | None = None, max_workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise PrivbenchError(
                "the ray executor needs Ray: pip install 'privbench[ray]'"
            ) from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = address or "a local instance"
                raise PrivbenchError(f"cannot start or reach Ray at {where}: {err}") from None
        resources = ray.cluster_resources()
        self.gpus = 1 if resources.get("GPU", 0) >= 1 else 0
        self.max_workers = max_workers or max(1, int(resources.get("CPU", 1)))

    def map(self, function: Callable[[Job], Any], jobs: Sequence[Job]) -> Iterator[Outcome]:
        ray = self.ray
        remote = ray.remote(num_cpus=1, num_gpus=self.gpus, max_retries=0)(function)
        queue = list(jobs)
        running: dict[Any, Any] = {}
        try:
            while queue or running:
                while queue and len(running) < self.max_workers:
                    job = queue.pop(0)
                    running[remote.remote(job)] = job
                (ref,), _ = ray.wait(list(running), num_returns=1)
                job = running.pop(ref)
                try:
                    yield job, ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    yield job, getattr(err, "cause", None) or err  # the job's own exception
                except ray.exceptions.RayError as err:  # a worker died, a node was lost
                    yield job, err
        finally:
            for ref in running:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def create_executor(
    name: str = "local", *, max_workers: int | None = None, address: str | None = None
) -> Executor:
    """The executor a ``privbench bench`` flag names (local with one worker by default)."""
    if name not in EXECUTORS:
        raise OptionError(f"unknown executor '{name}' (executors: {', '.join(EXECUTORS)})")
    if max_workers is not None and max_workers < 1:
        raise OptionError("--max-workers must be at least 1")
    if name == "ray":
        return RayExecutor(address, max_workers)
    if address is not None:
        raise OptionError("--address is for --executor ray")
    if max_workers is None or max_workers == 1:
        return InlineExecutor()
    return ProcessExecutor(max_workers)
