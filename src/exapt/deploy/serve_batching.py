"""Dynamic batching: concurrent requests merged into one forward pass.

Each request is checked and prepared on arrival (a bad one fails alone, with 422), then
queued with the predictor it was routed to *at arrival*. One task takes the oldest job,
keeps taking jobs until `max_batch` inputs are gathered or `max_wait_ms` has passed since
the first, and runs one forward pass per predictor among them on the inference thread.
A hot swap replaces the predictor new requests are routed to; queued and running
requests keep the one they arrived with, so none is dropped or answered by a mix.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Job:
    predictor: object
    items: list
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, max_batch: int, max_wait_ms: float, on_batch=None):
        self.max_batch, self.max_wait = max(1, int(max_batch)), max(0.0, max_wait_ms) / 1000.0
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        # one inference thread: torch already spreads one pass over the cores
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="exapt-infer")
        self.on_batch = on_batch       # called with (predictor, outputs, n_jobs, n_inputs) after each pass
        self.task: asyncio.Task | None = None
        self.pending = 0
        self.carry: Job | None = None   # the job that did not fit the last batch: first in the next

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """After the server stopped taking requests: finish what is queued, then end."""
        while self.pending:
            await asyncio.sleep(0.01)
        if self.task is not None:
            self.task.cancel()
        self.pool.shutdown(wait=True)

    async def submit(self, predictor, items: list) -> dict[str, np.ndarray]:
        fut = asyncio.get_running_loop().create_future()
        self.pending += 1
        try:
            await self.queue.put(Job(predictor, items, fut))
            return await fut
        finally:
            self.pending -= 1

    async def _gather(self) -> list[Job]:
        first, self.carry = self.carry, None
        jobs = [first if first is not None else await self.queue.get()]
        n = len(jobs[0].items)
        deadline = time.perf_counter() + self.max_wait
        while n < self.max_batch:
            if not self.queue.empty():
                job = self.queue.get_nowait()
            else:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
                    break
            if n + len(job.items) > self.max_batch:   # it starts the next batch instead
                self.carry = job
                break
            jobs.append(job)
            n += len(job.items)
        return jobs

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            groups: dict[int, list[Job]] = {}
            for job in jobs:
                groups.setdefault(id(job.predictor), []).append(job)
            for group in groups.values():
                predictor = group[0].predictor
                items = [x for job in group for x in job.items]
                try:
                    out = await loop.run_in_executor(self.pool, predictor.outputs, items)
                except Exception as e:  # answered to the waiting requests as one line, never a trace
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(e)
                    continue
                start = 0
                for job in group:
                    stop = start + len(job.items)
                    if not job.future.done():
                        job.future.set_result({k: v[start:stop] for k, v in out.items()})
                    start = stop
                if self.on_batch is not None:
                    self.on_batch(predictor, out, len(group), len(items))
