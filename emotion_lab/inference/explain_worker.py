"""Explanations for the HTTP service, computed beside the prediction queue, never in it.

Integrated gradients costs tens of forward and backward passes per sentence. They run in one child
process (spawned, so it shares no locks or thread pools with the server), which loads the fp32 torch
network from the model folder as the server starts (`/health` says when it is ready), uses `threads`
intra-op threads and runs at a lower CPU priority than predictions. At most
`Limits.max_pending_explanations` requests are in the worker or waiting for it; beyond that, and for an
explanation not done within `Limits.explain_timeout_s`, the answer is 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from emotion_lab.errors import first_line
from emotion_lab.inference.batching import Limits, RequestError

log = logging.getLogger(__name__)
NICENESS = 10  # the child's CPU priority below the server's

_predictor = None  # the child's predictor, loaded once by _load


def _load(source: str, trusted_modules: tuple[str, ...], threads: int, spelling: bool = True) -> None:
    import torch

    from emotion_lab.inference.predictor import EmotionPredictor

    global _predictor
    os.nice(NICENESS)
    torch.set_num_threads(threads)
    _predictor = EmotionPredictor.from_pretrained(source, trusted_modules, backend="torch", spelling=spelling)


def _loaded() -> bool:
    return _predictor is not None


def _explain(texts: list[str], steps: int) -> list[dict]:
    return [explanation.as_json() for explanation in _predictor.explain(texts, steps=steps)]


class ExplainWorker:
    """Explanations of a model folder (or checkpoint) `source` in a child process (module docstring)."""

    def __init__(
        self,
        source: str | Path,
        limits: Limits,
        trusted_modules: Sequence[str] = (),
        threads: int = 1,
        steps: int = 32,
        spelling: bool = True,
    ) -> None:
        self.source, self.limits, self.steps = str(source), limits, steps
        self._initargs = (self.source, tuple(trusted_modules), threads, spelling)
        self._pool: ProcessPoolExecutor | None = None
        self._ready = None  # the child's first task: done once it has loaded the model
        self.failed = False  # the child could not load the model: no more attempts
        self.pending = 0
        self.explained_texts = 0

    def start(self) -> None:
        self._pool = ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), initializer=_load, initargs=self._initargs
        )
        self._ready = self._pool.submit(_loaded)  # the child loads now, not on the first explanation

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def explain(self, texts: list[str]) -> list[dict]:
        pool = self._pool
        if pool is None:
            reason = "could not load the model (see the server log)" if self.failed else "is not running"
            raise RequestError(503, f"explanations unavailable: the explanation worker {reason}", may_retry=False)
        if self.pending >= self.limits.max_pending_explanations:
            raise RequestError(503, f"explanations busy: {self.pending} requests waiting; retry shortly")
        try:
            job = asyncio.wrap_future(pool.submit(_explain, texts, self.steps))
        except BrokenProcessPool:
            raise self._broken(pool) from None
        self.pending += 1
        job.add_done_callback(self._done)  # counted until the worker is done with it, even after a timeout
        try:
            result = await asyncio.wait_for(asyncio.shield(job), self.limits.explain_timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(
                503, f"the explanation took longer than {self.limits.explain_timeout_s:g} s; retry shortly"
            ) from None
        except BrokenProcessPool:
            raise self._broken(pool) from None
        except ValueError as err:  # what the model cannot do, e.g. a tokenizer without word boundaries
            raise RequestError(422, f"no explanation for this model: {first_line(err)}") from None
        except Exception:
            log.exception("an explanation failed")
            raise RequestError(
                503, "the explanation failed (the server log has why); predictions go on", may_retry=False
            ) from None
        self.explained_texts += len(texts)
        return result

    def _done(self, job: asyncio.Future) -> None:
        self.pending -= 1
        if not job.cancelled():
            job.exception()  # seen: a request that gave up, or the one that waited and raised it

    def _broken(self, pool: ProcessPoolExecutor) -> RequestError:
        """The child died. A worker that had loaded its model is started afresh; one that never could
        stays stopped, rather than load the model again for every request."""
        if pool is self._pool:  # the first request to see it; later ones find the pool replaced
            was_ready, self._pool = self.ready, None
            pool.shutdown(wait=False, cancel_futures=True)
            if was_ready:
                log.error("the explanation worker stopped; starting a new one")
                self.start()
            else:
                self.failed = True
        return RequestError(503, "the explanation worker stopped (see the server log); retry shortly")

    @property
    def ready(self) -> bool:
        return self._ready is not None and self._ready.done() and self._ready.exception() is None

    def stats(self) -> dict:
        return {"ready": self.ready, "pending": self.pending, "explained_texts": self.explained_texts}
