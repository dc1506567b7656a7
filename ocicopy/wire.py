"""What crosses the wire, as pure helpers: URLs safe to print, capped body reads, the spec's error body."""

from __future__ import annotations

import json

import httpx2

from ocicopy.errors import BodyTooLargeError, BrokenBody, SpecError, TransportError

__all__ = ["drain", "parse_error_body", "read_capped", "redact"]


def redact(url: httpx2.URL | str) -> str:
    """A URL safe to print: no userinfo, no query string (signed URLs carry secrets there)."""
    u = httpx2.URL(str(url))
    shown = f"{u.scheme}://{u.netloc.decode()}{u.path}"
    return shown + ("?…" if u.query else "")


async def read_capped(response: httpx2.Response, limit: int, what: str) -> bytes:
    """Read a streamed body into memory, aborting at ``limit + 1`` bytes whatever Content-Length says.

    The bytes are content-decoded (a gzip ``Content-Encoding`` is transport, not manifest content); the cap
    applies to the decoded stream, so a compression bomb is cut off too. Blobs never come through here.
    """
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(what, limit)
    buf = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            buf += chunk
            if len(buf) > limit:
                raise BodyTooLargeError(what, limit)
    except httpx2.HTTPError as exc:  # a broken (retryable) or undecodable (not) body
        request = response.request
        kind = BrokenBody if isinstance(exc, httpx2.TransportError) else TransportError
        raise kind(request.method, redact(request.url), f"reading {what}: {type(exc).__name__}") from None
    return bytes(buf)


async def drain(response: httpx2.Response, limit: int) -> None:
    """Read a small unwanted body to its end, so the connection goes back to the pool (httpcore2 drops a
    connection whose response is closed unread); a body over ``limit`` is left and the connection dropped."""
    if response.is_stream_consumed:
        return
    seen = 0
    try:
        async for chunk in response.aiter_raw():
            seen += len(chunk)
            if seen > limit:
                return
    except httpx2.HTTPError:
        return


def parse_error_body(body: bytes) -> list[SpecError]:
    """The spec's ``{"errors": [{"code", "message", "detail"}]}``; anything else yields no codes."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return []
    items = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return []
    return [
        SpecError(str(e.get("code", ""))[:100], str(e.get("message", ""))[:300], _detail(e.get("detail")))
        for e in items[:10]
        if isinstance(e, dict) and e.get("code")
    ]


def _detail(value: object) -> str:
    """An error entry's ``detail`` (any JSON) as short text: a string as it is, anything else as compact JSON."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return text[:300]
