"""uvicorn's httptools protocol with the limits it lacks: a deadline and a size cap
on the request head.

Probed on uvicorn 0.54 with httptools 0.9, before this module: a connection that
sends nothing, half a request head, or a head one byte a second (slowloris) was
never closed, since uvicorn's keep-alive timer only runs after an answer and any
byte cancels it; and httptools takes a header of any size (a 1 MB one got 200).
uvicorn's ``h11_max_incomplete_event_size`` applies to its h11 parser only. So
this protocol adds, per connection (tests/reliability/test_serving_abuse.py
proves each):

- the request line and headers must arrive within :data:`HEAD_SECONDS` of the
  connection opening or of the previous answer; if not, the server answers 408
  (when part of a head came) or just closes (when nothing came);
- the request line and headers may hold :data:`MAX_HEAD_BYTES`; a longer head is
  answered 431 and the connection closed, counted as the bytes arrive, so an
  endless header is cut off there and never buffered whole.

The body's limits (size and deadline) are the app's (:mod:`stages.serving.app`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# The request line and headers, from the first byte to the blank line.
HEAD_SECONDS = 10.0
MAX_HEAD_BYTES = 16 * 1024  # h11's default for uvicorn's other parser
_END = b"\r\n\r\n"


def _closing_answer(status: int, code: str, message: str) -> bytes:
    """An error as the app writes them (MLflow's JSON), then the end of the line."""
    body = json.dumps({"error_code": code, "message": message}).encode()
    return b"".join([
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
        body,
    ])  # fmt: skip


class GuardedHttpTools(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with a deadline and a size cap on each head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timer: asyncio.TimerHandle | None = None
        self.in_head = True  # reading a request line and headers
        self.head_bytes = 0  # of the head being read, as they arrived
        self.head_tail = b""  # its last bytes, to find a blank line split in two

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _start_head(self) -> None:
        self.in_head, self.head_bytes, self.head_tail = True, 0, b""
        self._stop_head_timer()
        self.head_timer = self.loop.call_later(HEAD_SECONDS, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing():
            return
        if self.head_bytes:
            message = f"the request head did not arrive within {HEAD_SECONDS:g}s"
            self.transport.write(_closing_answer(408, "REQUEST_TIMEOUT", message))
        self.transport.close()

    def _head_too_large(self, data: bytes) -> bool:
        """Whether the head being read, up to its blank line in ``data``, is over
        the cap; ``head_bytes`` already counts ``data``."""
        end = (self.head_tail + data).find(_END)
        if end < 0:
            return True
        before = self.head_bytes - len(data) - len(self.head_tail)
        return before + end + len(_END) > MAX_HEAD_BYTES

    def data_received(self, data: bytes) -> None:
        if self.in_head:
            self.head_bytes += len(data)
            # Only a head already past the cap is searched for its end.
            if self.head_bytes > MAX_HEAD_BYTES and self._head_too_large(data):
                self._refuse_head()
                return
            self.head_tail = (self.head_tail + data)[-(len(_END) - 1) :]
        super().data_received(data)

    def _refuse_head(self) -> None:
        self._stop_head_timer()
        self.in_head = False
        message = f"the request line and headers are over {MAX_HEAD_BYTES} bytes"
        answer = _closing_answer(431, "REQUEST_HEADERS_TOO_LARGE", message)
        self.transport.write(answer)
        self.transport.close()

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next head's deadline runs from this answer, unless a pipelined
        # request (whose head already came) starts now.
        if not self.transport.is_closing() and not self.pipeline:
            if self.cycle is None or self.cycle.response_complete:
                self._start_head()
