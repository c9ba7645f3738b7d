"""ASGI middleware that keeps one client from holding the service or reading its insides.

`BodyLimit`: a POST must declare its size (Content-Length), at most `max_bytes`, else 411 / 413 before
any of it is read (a chunked body would be read whole before any check).
`BodyDeadline`: a request's body must arrive within `seconds` of its headers, else 408 and the
connection is closed (a body declared and never sent would otherwise hold it forever).
`RequestIds`: every response carries `X-Request-ID`; an unhandled exception becomes a 500 that names
only that id, while the log line has the id and the traceback (an exception's text may hold paths or
a client's input).
`SecurityHeaders`: every answer carries a Content-Security-Policy under which a page runs only the
server's own script and style (no inline code, no other origin), is never framed, and sends forms
nowhere; browsers are told not to guess content types or send referrers.
Headers that never finish never reach an ASGI app: `emotion_lab.inference.header_deadline` bounds them.
"""

from __future__ import annotations

import json
import logging
import uuid

import anyio
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


async def _answer(send: Send, status: int, error: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            size = Headers(scope=scope).get("content-length")
            if size is None or not size.isdigit():
                await _answer(send, 411, "send the body with a Content-Length header", [(b"connection", b"close")])
                return
            if int(size) > self.max_bytes:
                error = f"body of {size} bytes; the limit is {self.max_bytes}"
                await _answer(send, 413, error, [(b"connection", b"close")])
                return
        await self.app(scope, receive, send)


class BodyTimeout(HTTPException):
    """An HTTPException, because FastAPI passes those on from a body read and turns any other into a 400."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s", headers={"Connection": "close"})


class BodyDeadline:
    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.seconds
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:  # later reads only wait for a disconnect, which may take as long as the answer
                return await receive()
            with anyio.move_on_after(deadline - anyio.current_time()) as scope_:
                message = await receive()
            if scope_.cancelled_caught:
                raise BodyTimeout(self.seconds)
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        header = (b"x-request-id", request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s failed: %s %s", request_id, scope["method"], scope["path"])
            if started:  # part of the answer is out: all that is left is to drop the connection
                raise
            await _answer(send, 500, f"internal error; the server log has it under request id {request_id}", [header])


CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
