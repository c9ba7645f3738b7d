"""Dynamic batching for one predictor: concurrent requests wait in one queue and run together.

A single worker takes everything queued (up to `max_batch_texts` texts, after waiting at most
`max_wait_ms` for company; one larger request runs alone) and runs it in a thread, sorted by length
in chunks of `forward_batch`, so the event loop keeps accepting requests while the model runs. If the
model fails on a batch, its requests are retried one by one, so only the one that caused it fails
(with the model's exception, which the server logs under the request's id). When the worker stops, for
whatever reason, every request still waiting on it is answered 503 at once instead of never.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from emotion_lab.inference.predictor import EmotionPredictor, Prediction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What one request may ask; beyond them the answer is 413 (too large) or 422 (malformed)."""

    max_chars: int = 5000  # per text; the model reads the first max_length word-pieces anyway
    max_texts: int = 256  # per request
    max_top_words: int = 20
    max_body_bytes: int = 2_000_000
    max_batch_texts: int = 64  # texts collected into one batch
    # A batch runs sorted by length in chunks of this many texts, so short sentences are not padded to
    # the longest one in it (chosen by measurement: docs/performance.md).
    forward_batch: int = 16
    max_wait_ms: float = 2.0  # how long a batch waits for more requests
    max_queued_texts: int = 8192  # beyond this, 503 with Retry-After: shed load instead of queueing forever
    body_timeout_s: float = 10.0  # a body not read whole by then is answered 408 (enough for 2 MB on a slow link)
    max_explain_texts: int = 8  # per request asking for explanations (each costs ~30 forward and backward passes)
    max_pending_explanations: int = 4  # requests in the explanation worker or waiting for it; beyond, 503
    explain_timeout_s: float = 30.0  # an explanation not done by then is answered 503


class RequestError(Exception):
    """A request answered with `status` and one line; a 503 that `may_retry` carries Retry-After."""

    def __init__(self, status: int, message: str, may_retry: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.may_retry = may_retry


@dataclass
class _Job:
    texts: list[str]
    top_words: int
    future: asyncio.Future


class DynamicBatcher:
    """Collects concurrent requests into batches for one predictor (see the module docstring)."""

    def __init__(self, predictor: EmotionPredictor, limits: Limits) -> None:
        self.predictor = predictor
        self.limits = limits
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._next: _Job | None = None  # a job that did not fit the previous batch goes first
        self.queued_texts = 0
        self.batches = 0
        self.batched_texts = 0
        self.requests = 0
        self._running: list[_Job] = []  # the batch in the model now
        self._worker: asyncio.Task | None = None

    @property
    def alive(self) -> bool:
        return self._worker is not None and not self._worker.done()

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())
        self._worker.add_done_callback(self._stopped)

    def _stopped(self, worker: asyncio.Task) -> None:
        """Answers 503 to every request the stopped worker would have answered."""
        if not worker.cancelled() and worker.exception() is not None:
            log.error("the prediction worker died", exc_info=worker.exception())
        waiting = [*self._running, *([self._next] if self._next else [])]
        while not self.queue.empty():
            waiting.append(self.queue.get_nowait())
        self._running, self._next, self.queued_texts = [], None, 0
        for job in waiting:
            if not job.future.done():
                job.future.set_exception(RequestError(503, "the prediction worker stopped; see the server log"))

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def submit(self, texts: list[str], top_words: int) -> list[Prediction]:
        if not self.alive:
            raise RequestError(503, "the prediction worker is not running; see the server log")
        if self.queued_texts + len(texts) > self.limits.max_queued_texts:
            raise RequestError(503, f"server busy: {self.queued_texts} texts queued; retry shortly")
        job = _Job(texts, top_words, asyncio.get_running_loop().create_future())
        self.queued_texts += len(texts)
        self.requests += 1
        self.queue.put_nowait(job)  # no await between the alive check and here: a stopping worker sees the job
        return await job.future

    async def _get(self, timeout: float | None) -> _Job | None:
        if self._next is not None:
            job, self._next = self._next, None
            return job
        if timeout is None:
            return await self.queue.get()
        try:
            return self.queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self.queue.get(), timeout)
        except (asyncio.QueueEmpty, asyncio.TimeoutError):
            return None

    async def _collect(self) -> list[_Job]:
        """Jobs for one batch: at most max_batch_texts texts (or one larger request alone)."""
        jobs = [await self._get(None)]
        size = len(jobs[0].texts)
        deadline = time.monotonic() + self.limits.max_wait_ms / 1000
        while size < self.limits.max_batch_texts:
            job = await self._get(deadline - time.monotonic())
            if job is None:
                break
            if size + len(job.texts) > self.limits.max_batch_texts:
                self._next = job
                break
            jobs.append(job)
            size += len(job.texts)
        return jobs

    def _predict(self, jobs: list[_Job]) -> list[list[Prediction]]:
        texts = [text for job in jobs for text in job.texts]
        predictions = self.predictor.predict(texts, self.limits.forward_batch, max(job.top_words for job in jobs))
        out, start = [], 0
        for job in jobs:
            mine = predictions[start : start + len(job.texts)]
            start += len(job.texts)
            for prediction in mine:
                prediction.top_words = prediction.top_words[: job.top_words]
            out.append(mine)
        return out

    async def _answer(self, jobs: list[_Job]) -> None:
        try:
            results = await asyncio.to_thread(self._predict, jobs)
        except Exception as err:
            if len(jobs) > 1:  # one request's text must not fail the others: retry each alone
                for job in jobs:
                    await self._answer([job])
                return
            results = [err]  # raised in the request, whose handler logs it with the request's id
        for job, result in zip(jobs, results):
            if job.future.done():  # the client has gone
                if isinstance(result, Exception):
                    log.error("prediction failed for a request whose client had gone", exc_info=result)
                continue
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    async def _run(self) -> None:
        while True:
            jobs = await self._collect()
            self.queued_texts -= sum(len(job.texts) for job in jobs)
            jobs = [job for job in jobs if not job.future.done()]  # clients that gave up
            if not jobs:
                continue
            size = sum(len(job.texts) for job in jobs)
            self.batches += 1
            self.batched_texts += size
            self._running = jobs
            await self._answer(jobs)
            self._running = []

    def stats(self) -> dict:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "batched_texts": self.batched_texts,
            "mean_batch_texts": self.batched_texts / self.batches if self.batches else 0.0,
            "queued_texts": self.queued_texts,
        }
