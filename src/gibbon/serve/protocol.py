"""uvicorn's HTTP/1.1 protocol with a deadline on every request head (against slowloris).

uvicorn times out an idle keep-alive connection, but not a client that sends its request line
and headers a byte at a time: each byte re-arms nothing, and the connection is held for as
long as the client likes. A few hundred such clients hold every connection slot
(``--max-connections``). :func:`head_timeout_protocol` returns uvicorn's h11 protocol with one
timer per request: if the head (request line and headers) is not complete ``seconds`` after the
connection opened, or after the previous response went out, the connection is closed.
The body has its own deadline in :func:`gibbon.serve.app.read_body`.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT = 10.0


def head_timeout_protocol(seconds: float = HEAD_TIMEOUT) -> type:
    """An ``H11Protocol`` subclass closing connections whose request head takes over ``seconds``."""

    class HeadTimeoutH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()

        def _arm_head_timer(self) -> None:
            # the cycle is replaced once the next request's head is parsed; if it is still the same
            # one when the timer fires, the head never came whole
            self.loop.call_later(seconds, self._head_deadline, self.cycle)

        def _head_deadline(self, previous) -> None:
            if self.cycle is previous and not self.transport.is_closing():
                self.transport.close()

    HeadTimeoutH11Protocol.__name__ = HeadTimeoutH11Protocol.__qualname__ = "HeadTimeoutH11Protocol"
    return HeadTimeoutH11Protocol
