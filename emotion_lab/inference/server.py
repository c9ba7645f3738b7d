"""An HTTP service over an `EmotionPredictor` (FastAPI), with dynamic batching of concurrent requests.

    app = create_app(EmotionPredictor.from_pretrained(folder, backend="auto"), Limits())
    uvicorn.run(app, port=8000)          # or: python -m emotion_lab.serve MODEL

Endpoints: `POST /predict` ({"texts": [...]} or {"text": "..."}, optional "top_words": k and "explain":
true), `POST /predict/file` ({"filename": ..., "content": ...}: the texts of a .txt, .csv or .jsonl file,
answered as rows and a CSV), `GET /health` (liveness, the backend, batching, explanation and memory
counters), `GET /model` (labels, backend, network config, limits, model card; file paths reduced to file
names), and `GET /` with `/static/page.{js,css}`: a page that predicts as you type, explains, and runs
files (`inference/page/`). Every answer carries a Content-Security-Policy that lets a page run only the
server's own script and style. Bad requests get a 4xx with one line in {"error": ...};
a body slower than `Limits.body_timeout_s` gets 408; a `Host` header not in `allowed_hosts` gets 400
(a web page cannot reach a loopback server by DNS rebinding); a failure of the server itself gets a 500
naming a request id, whose log line has the exception (`emotion_lab.inference.guards`).

Batching (`emotion_lab.inference.batching`): under load, batches grow by themselves; a lone request
waits at most `max_wait_ms`. The model is called from one worker only, so one predictor serves every
request. Explanations (integrated gradients on the fp32 torch network, whatever the backend) run in
their own process with their own limits (`emotion_lab.inference.explain_worker`), never in that queue.
"""

from __future__ import annotations

import asyncio
import re
import resource
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from emotion_lab.inference.batching import DynamicBatcher, Limits, RequestError
from emotion_lab.inference.explain import METHOD
from emotion_lab.inference.explain_worker import ExplainWorker
from emotion_lab.inference.guards import BodyDeadline, BodyLimit, RequestIds, SecurityHeaders
from emotion_lab.inference.predictor import EmotionPredictor, Prediction
from emotion_lab.inference.text_files import EXTENSIONS, TextFileError, predictions_csv, read_texts, upload_name

# Starlette compares the Host header without its port, IPv6 literals in brackets.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# An absolute path (POSIX, home or Windows drive) not inside a URL or a relative path.
_ABSOLUTE_PATH = re.compile(r"(?<![\w/\\.:~-])(?:~|[A-Za-z]:)?[/\\][^\s`'\"<>()\[\]]*")
_EXPORTED_FROM = re.compile(r"^(- exported from: `)([^`]*)(`)", re.MULTILINE)
PAGE_DIR = Path(__file__).parent / "page"
_PAGE_FILES = {"page.js": "text/javascript", "page.css": "text/css"}


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | None = Field(None, description="one text")
    texts: list[str] | None = Field(None, description="several texts, answered in order")
    top_words: int = Field(0, description="also return the k most-attended word-pieces of each text")
    explain: bool = Field(False, description="also return each text's word attributions (integrated gradients)")


class FileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    filename: str = Field(description="its name: the extension says how to read it (.txt, .csv, .jsonl)")
    content: str = Field(description="the file's text")


def _rss_mb() -> float:
    """Resident memory of this process (Linux: current, else peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def file_name(value: str) -> str:
    """What the server may say of a path: its last part, never where it lies."""
    return re.split(r"[/\\]", value.rstrip("/\\"))[-1] or value


def without_paths(text: str) -> str:
    """The model card as served: the checkpoint it was exported from by file name, no absolute paths."""
    text = _EXPORTED_FROM.sub(lambda m: m[1] + file_name(m[2]) + m[3], text)
    return _ABSOLUTE_PATH.sub(lambda m: file_name(m[0]), text)


def public_config(net: dict) -> dict:
    """The network config with local paths (an encoder folder) reduced to their names; hub ids kept."""

    def local(value) -> bool:  # a hub id is "name" or "owner/name"
        return isinstance(value, str) and (
            Path(value).is_absolute() or value.startswith(("~", ".")) or value.count("/") > 1 or "\\" in value
        )

    return {key: file_name(value) if local(value) else value for key, value in net.items()}


def _check(request: PredictRequest, limits: Limits) -> list[str]:
    if (request.text is None) == (request.texts is None):
        raise RequestError(422, 'send exactly one of "text" (a string) or "texts" (a list of strings)')
    texts = [request.text] if request.text is not None else request.texts
    if not texts:
        raise RequestError(422, '"texts" is empty: send at least one text')
    _check_texts(texts, limits)
    if not 0 <= request.top_words <= limits.max_top_words:
        raise RequestError(422, f"top_words={request.top_words}; allowed 0..{limits.max_top_words}")
    if request.explain and len(texts) > limits.max_explain_texts:
        raise RequestError(
            413, f"{len(texts)} texts to explain in one request; the limit is {limits.max_explain_texts}"
        )
    return texts


def _check_texts(texts: list[str], limits: Limits, where: str = "text", first: int = 0) -> None:
    if len(texts) > limits.max_texts:
        raise RequestError(413, f"{len(texts)} texts in one request; the limit is {limits.max_texts}")
    for i, text in enumerate(texts, first):
        if len(text) > limits.max_chars:
            raise RequestError(413, f"{where} {i} has {len(text)} characters; the limit is {limits.max_chars}")
        if not text.strip():
            raise RequestError(422, f"{where} {i} is empty")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:  # JSON allows lone surrogates (\ud800); text has none
            raise RequestError(
                422, f"{where} {i} is not valid Unicode ({err.reason} at character {err.start})"
            ) from None


def _validation_message(err: RequestValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    if first.get("type") == "json_invalid":
        return 'the body is not valid JSON; send {"text": "..."} or {"texts": ["...", ...]}'
    if first.get("type") == "missing" and where == "body":
        return 'empty body; send JSON {"text": "..."} or {"texts": ["...", ...]}'
    return f"{where}: {first.get('msg', 'invalid')}"


def create_app(
    predictor: EmotionPredictor,
    limits: Limits | None = None,
    card: str = "",
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
    explainer: ExplainWorker | None = None,
) -> FastAPI:
    """`allowed_hosts`: Host header names answered (any port), as Starlette's TrustedHostMiddleware takes them.
    `explainer`: where `"explain": true` is answered; None: such requests get 422 saying so."""
    limits = limits or Limits()
    batcher = DynamicBatcher(predictor, limits)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        if explainer is not None:
            explainer.start()
        yield
        await batcher.stop()
        if explainer is not None:
            explainer.stop()

    app = FastAPI(title="emotion_lab", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        return JSONResponse({"error": _validation_message(err)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):  # 404, 405, an unreadable body
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError):
        headers = {"Retry-After": "1"} if err.status == 503 and err.may_retry else None
        return JSONResponse({"error": str(err)}, status_code=err.status, headers=headers)

    # Added last is outermost: every answer, even a refused Host, carries a request id and the page's policy.
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(BodyDeadline, seconds=limits.body_timeout_s)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(RequestIds)
    app.add_middleware(SecurityHeaders)

    @app.post("/predict")
    async def predict(request: PredictRequest) -> dict:
        texts = _check(request, limits)
        if request.explain and explainer is None:
            raise RequestError(
                422, 'this server gives no explanations (started with --explain-threads 0); drop "explain"'
            )
        if request.explain:
            predictions, explanations = await asyncio.gather(
                batcher.submit(texts, request.top_words), explainer.explain(texts)
            )
        else:
            predictions, explanations = await batcher.submit(texts, request.top_words), [None] * len(texts)
        answers = [_as_json(p) | ({"explanation": e} if e else {}) for p, e in zip(predictions, explanations)]
        return {"backend": predictor.backend.name, "predictions": answers}

    @app.post("/predict/file")
    async def predict_file(request: FileRequest) -> dict:
        try:
            texts = read_texts(request.filename, request.content)
        except TextFileError as err:
            raise RequestError(422, str(err)) from None
        _check_texts(texts, limits, where=f"{upload_name(request.filename)}: text", first=1)
        predictions = await batcher.submit(texts, 0)
        return {
            "backend": predictor.backend.name,
            "rows": [{"text": text} | _as_json(p) for text, p in zip(texts, predictions)],
            "csv": predictions_csv(texts, predictions, predictor.labels),
        }

    @app.get("/")
    async def page():
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html")

    @app.get("/static/{name}")
    async def page_file(name: str):
        if name not in _PAGE_FILES:  # only the page's own files, never a path
            raise StarletteHTTPException(404, f"no page file {name!r}")
        return FileResponse(PAGE_DIR / name, media_type=_PAGE_FILES[name])

    @app.get("/health")
    async def health():
        status = "ok" if batcher.alive else "prediction worker stopped"
        body = {
            "status": status,
            "backend": predictor.backend.name,
            "uptime_s": round(time.time() - started, 1),
            "rss_mb": round(_rss_mb(), 1),
        }
        body |= batcher.stats()
        if explainer is not None:
            body["explanations"] = explainer.stats()
        return JSONResponse(body, status_code=200 if batcher.alive else 503)

    @app.get("/model")
    async def model() -> dict:
        return {
            "labels": list(predictor.labels),
            "backend": predictor.backend.name,
            "max_length": predictor.max_length,
            "temperature": predictor.temperature,
            "net": public_config(predictor.net_config),
            "limits": asdict(limits),
            "card": without_paths(card),
            "explain": {"method": METHOD, "max_texts": limits.max_explain_texts} if explainer else None,
            "spelling_words": len(predictor.spelling.counts) if predictor.spelling is not None else 0,
            "files": {"extensions": list(EXTENSIONS)},
        }

    return app


def _as_json(prediction: Prediction) -> dict:
    out = {"label": prediction.label, "probs": prediction.probs, "truncated": prediction.truncated}
    if prediction.top_words:
        out["top_words"] = [[word, weight] for word, weight in prediction.top_words]
    if prediction.read_as is not None:
        out["read_as"] = prediction.read_as
    return out
