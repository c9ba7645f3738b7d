"""An HTTP service over an `EmotionPredictor` (FastAPI), with dynamic batching of concurrent requests.

    app = create_app(EmotionPredictor.from_pretrained(folder, backend="auto"), Limits())
    uvicorn.run(app, port=8000)          # or: python -m emotion_lab.serve MODEL

Endpoints: `POST /predict` ({"texts": [...]} or {"text": "..."}, optional "top_words": k), `GET /health`
(liveness plus batching and memory counters), `GET /model` (labels, backend, network config, limits,
model card). Bad requests get a 4xx with one line in {"error": ...}; never a 500.

Batching: requests wait in one queue; a single worker takes everything queued (up to
`max_batch_texts`, after waiting at most `max_wait_ms` for company) and runs it in a thread, sorted
by length in chunks of `forward_batch`, so the event loop keeps accepting requests while the model
runs. Under load, batches grow by themselves; a lone request waits at most `max_wait_ms`. The model
is called from that one worker only, so one predictor serves every request.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from emotion_lab.errors import first_line
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


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | None = Field(None, description="one text")
    texts: list[str] | None = Field(None, description="several texts, answered in order")
    top_words: int = Field(0, description="also return the k most-attended word-pieces of each text")


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _rss_mb() -> float:
    """Resident memory of this process (Linux: current, else peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
        self._worker: asyncio.Task | None = None

    @property
    def alive(self) -> bool:
        return self._worker is not None and not self._worker.done()

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

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
        await self.queue.put(job)
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
            log.exception("prediction failed")
            results = [RequestError(500, f"prediction failed: {type(err).__name__}: {first_line(err)}")]
        for job, result in zip(jobs, results):
            if job.future.done():  # the client has gone
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
            await self._answer(jobs)

    def stats(self) -> dict:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "batched_texts": self.batched_texts,
            "mean_batch_texts": self.batched_texts / self.batches if self.batches else 0.0,
            "queued_texts": self.queued_texts,
        }


def _check(request: PredictRequest, limits: Limits) -> list[str]:
    if (request.text is None) == (request.texts is None):
        raise RequestError(422, 'send exactly one of "text" (a string) or "texts" (a list of strings)')
    texts = [request.text] if request.text is not None else request.texts
    if not texts:
        raise RequestError(422, '"texts" is empty: send at least one text')
    if len(texts) > limits.max_texts:
        raise RequestError(413, f"{len(texts)} texts in one request; the limit is {limits.max_texts}")
    for i, text in enumerate(texts):
        if len(text) > limits.max_chars:
            raise RequestError(413, f"text {i} has {len(text)} characters; the limit is {limits.max_chars}")
        if not text.strip():
            raise RequestError(422, f"text {i} is empty")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:  # JSON allows lone surrogates (\ud800); text has none
            raise RequestError(422, f"text {i} is not valid Unicode ({err.reason} at character {err.start})") from None
    if not 0 <= request.top_words <= limits.max_top_words:
        raise RequestError(422, f"top_words={request.top_words}; allowed 0..{limits.max_top_words}")
    return texts


def _validation_message(err: RequestValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    if first.get("type") == "json_invalid":
        return 'the body is not valid JSON; send {"text": "..."} or {"texts": ["...", ...]}'
    if first.get("type") == "missing" and where == "body":
        return 'empty body; send JSON {"text": "..."} or {"texts": ["...", ...]}'
    return f"{where}: {first.get('msg', 'invalid')}"


def create_app(predictor: EmotionPredictor, limits: Limits = Limits(), card: str = "") -> FastAPI:
    batcher = DynamicBatcher(predictor, limits)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="emotion_lab", lifespan=lifespan)
    app.state.batcher = batcher

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        if request.method == "POST":
            size = request.headers.get("content-length")
            if size is None or not size.isdigit():  # a chunked body would be read whole before any check
                return JSONResponse({"error": "send the body with a Content-Length header"}, status_code=411)
            if int(size) > limits.max_body_bytes:
                return JSONResponse(
                    {"error": f"body of {size} bytes; the limit is {limits.max_body_bytes}"}, status_code=413
                )
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        return JSONResponse({"error": _validation_message(err)}, status_code=422)

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError):
        headers = {"Retry-After": "1"} if err.status == 503 else None
        return JSONResponse({"error": str(err)}, status_code=err.status, headers=headers)

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception):
        log.exception("request failed")
        return JSONResponse({"error": f"internal error: {type(err).__name__}: {first_line(err)}"}, status_code=500)

    @app.post("/predict")
    async def predict(request: PredictRequest) -> dict:
        texts = _check(request, limits)
        predictions = await batcher.submit(texts, request.top_words)
        return {"predictions": [_as_json(p) for p in predictions]}

    @app.get("/health")
    async def health():
        status = "ok" if batcher.alive else "prediction worker stopped"
        body = {"status": status, "uptime_s": round(time.time() - started, 1), "rss_mb": round(_rss_mb(), 1)}
        return JSONResponse(body | batcher.stats(), status_code=200 if batcher.alive else 503)

    @app.get("/model")
    async def model() -> dict:
        return {
            "labels": list(predictor.labels),
            "backend": predictor.backend.name,
            "max_length": predictor.max_length,
            "temperature": predictor.temperature,
            "net": predictor.net_config,
            "limits": asdict(limits),
            "card": card,
        }

    return app


def _as_json(prediction: Prediction) -> dict:
    out = {"label": prediction.label, "probs": prediction.probs, "truncated": prediction.truncated}
    if prediction.top_words:
        out["top_words"] = [[word, weight] for word, weight in prediction.top_words]
    return out
