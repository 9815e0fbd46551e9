"""A request body limit, enforced before anything reads the body: a pure ASGI middleware.

`BodyLimit(app, max_body_bytes)` answers 413 to a request whose declared
`Content-Length` is over the limit without calling the app at all (no body
byte is read, no handler runs); a body of unknown length (chunked) is
counted as it streams in, and once it passes the limit the client gets 413
at once and the app sees the request end (``http.disconnect``) instead of
the rest, so no layer ever buffers more than the limit. A `Content-Length`
that is not a number is refused with 400.

No framework is imported: it wraps any ASGI app (Starlette's own
`max_body_size` exists only in recent versions, and reads the header only
once the app asks for the body).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


JSON_OVERHEAD_BYTES = 64 * 1024  # room for a JSON body's keys, quotes and other fields


def json_body_limit(largest_field_chars: int) -> int:
    """A body limit for JSON requests whose largest field is up to `largest_field_chars` ASCII characters."""
    return largest_field_chars + JSON_OVERHEAD_BYTES


class BodyLimit:
    """Refuse HTTP request bodies over `max_body_bytes` with 413, before the app parses them."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must not be negative")
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is None:
            await _refuse(send, 400, "Content-Length is not a byte count")
            return
        if declared > self.max_body_bytes:
            await _refuse(send, 413, f"request body over the limit of {self.max_body_bytes} bytes")
            return
        await _Limited(self.app, self.max_body_bytes)(scope, receive, send)


class _Limited:
    """One request: counts its body as it streams and answers 413 the moment it passes the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit
        self.received = 0
        self.started = False  # the app began its response
        self.refused = False  # this middleware answered 413 instead

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            if self.refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    if not self.started:
                        self.refused = True
                        await _refuse(send, 413, f"request body over the limit of {self.limit} bytes")
                    return {"type": "http.disconnect"}  # the app sees the request end, not the excess
            return message

        async def guarded(message: Message) -> None:
            if self.refused:
                return  # the client has its 413: whatever the app answers to the cut-off body is dropped
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not self.refused:
                raise
            log.debug(
                "request refused with 413; the app's error on the cut-off body is dropped", exc_info=True
            )


def _content_length(scope: Scope) -> int | None:
    """The declared body length (0 if none is declared), or None if it is not one byte count.

    Repeated headers must agree; a number too long to be a real length is
    read as "over any limit" rather than parsed.
    """
    values = {v.strip() for k, v in scope.get("headers", []) if k.lower() == b"content-length"}
    if not values:
        return 0
    if len(values) != 1:
        return None
    (value,) = values
    if not value or not value.isdigit():  # bytes.isdigit: ASCII digits only
        return None
    return int(value) if len(value) <= 18 else 10**18


async def send_error(
    send: Send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer `status` with a JSON ``{"detail": ...}`` body, without calling the app."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Send, status: int, detail: str) -> None:
    await send_error(send, status, detail, [(b"connection", b"close")])  # the unread body is not waited for
