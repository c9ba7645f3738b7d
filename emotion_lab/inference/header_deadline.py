"""uvicorn's HTTP protocol with a deadline on request headers, which uvicorn itself does not have.

uvicorn arms its keep-alive timer only after a response and cancels it on any byte received, so a
connection that sends nothing, or sends its headers a line at a time, is held for as long as the client
likes (measured: docs/performance.md). This protocol closes a connection whose next request's headers
are not complete within `seconds` of the connection opening or of the previous response ending.

    uvicorn.Config(app, http=header_deadline_protocol(10.0), ...)
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.auto import AutoHTTPProtocol  # httptools when installed, else h11


def header_deadline_protocol(seconds: float) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's own protocol class (`Config(http=...)` takes a class)."""

    class HeaderDeadline(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        deadline_s = seconds
        _timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(self.deadline_s, self._late)

        def _late(self) -> None:
            # Both of uvicorn's protocols start a cycle once a request's headers are complete.
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._timer is not None:
                self._timer.cancel()
            super().connection_lost(exc)

    HeaderDeadline.__name__ = HeaderDeadline.__qualname__ = f"HeaderDeadline{AutoHTTPProtocol.__name__}"
    return HeaderDeadline
