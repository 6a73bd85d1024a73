"""Depth and size limits on every JSON input, checked before any parser runs.

Python's json module recurses once per nesting level: `"[" * 2000 + "]" * 2000` (4 KB) raised RecursionError in
`parse_patient` and the request ended in a 500. Here the nesting is counted by a regular-expression scan that does
not recurse (string contents, escapes included, are skipped), and the size is checked while the body streams in.

- `JsonLimits(max_bytes, max_depth)`, `JsonLimits.from_settings(settings)`: `.check(data, what)` raises
  `JsonLimitError` (422 in api/errors.py) for a JSON form field such as `patient`;
- `JsonBodyLimitMiddleware`: the same limits on every request body sent as JSON (422 before the route runs);
  `POST /predict/batch` carries base64 images, so its size limit is BATCH_MAX uploads of MAX_UPLOAD_MB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import status
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from settings import Settings

# Inside a string an escape (backslash + one character) is one token, so an escaped quote never ends the string.
_TOKENS = re.compile(rb'\\.|["\[\]{}]', re.DOTALL)
_JSON_MEDIA = re.compile(r"^application/([\w.+-]+\+)?json\b", re.IGNORECASE)
BATCH_PATH = "/predict/batch"
BATCH_OVERHEAD_BYTES = 64 * 1024


class JsonLimitError(ValueError):
    """A JSON input is nested too deeply or too large; the message names the input and the setting."""


def nesting_exceeds(data: bytes, max_depth: int) -> bool:
    """Whether arrays/objects in `data` nest deeper than `max_depth` (malformed JSON is left to the parser)."""
    depth, in_string = 0, False
    for token in _TOKENS.finditer(data):
        char = token.group()
        if char == b'"':
            in_string = not in_string
        elif in_string or len(char) == 2:
            continue
        elif char in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


@dataclass(frozen=True)
class JsonLimits:
    max_bytes: int
    max_depth: int

    @classmethod
    def from_settings(cls, settings: Settings) -> JsonLimits:
        return cls(settings.max_json_bytes, settings.max_json_depth)

    def too_large(self, what: str) -> JsonLimitError:
        return JsonLimitError(f"{what} is larger than the {self.max_bytes // 1024} KB limit for JSON (MAX_JSON_BYTES).")

    def check(self, data: bytes, what: str) -> None:
        """Raise `JsonLimitError` when `data` (JSON text) is larger or nested deeper than the limits."""
        if len(data) > self.max_bytes:
            raise self.too_large(what)
        if nesting_exceeds(data, self.max_depth):
            raise JsonLimitError(f"{what} is nested deeper than {self.max_depth} levels (MAX_JSON_DEPTH).")


def batch_limit_bytes(settings: Settings) -> int:
    """A JSON body of BATCH_MAX base64 images of MAX_UPLOAD_MB each."""
    return settings.batch_max * (settings.max_upload_bytes * 4 // 3 + 4) + BATCH_OVERHEAD_BYTES


class JsonBodyLimitMiddleware:
    """Reads a JSON request body under its size limit, checks its nesting, then hands it on unchanged."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.limits = JsonLimits.from_settings(settings)
        self.batch_limits = JsonLimits(batch_limit_bytes(settings), settings.max_json_depth)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope) if scope["type"] == "http" else None
        if headers is None or not _JSON_MEDIA.match(headers.get("content-type", "")):
            await self.app(scope, receive, send)
            return
        limits = self.batch_limits if scope.get("path") == BATCH_PATH else self.limits
        try:
            body = await _read_body(receive, limits, headers.get("content-length"))
            limits.check(body, "The request body")
        except JsonLimitError as exc:
            await JSONResponse({"detail": str(exc)}, status.HTTP_422_UNPROCESSABLE_CONTENT)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


async def _read_body(receive: Receive, limits: JsonLimits, declared: str | None) -> bytes:
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise limits.too_large("The request body")
    chunks, total, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            break
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limits.max_bytes:
            raise limits.too_large("The request body")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields the already-read body once, then whatever the client sends next (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
