"""HTTP/1.1 on the wire, without I/O: a request head parsed from its bytes, a response rendered to
bytes. The HTTP front (serving/http_front.py) reads and writes; everything a client controls is
parsed here, so tests/test_fuzz.py can throw arbitrary bytes at it.

Only what the services need: GET and POST with a Content-Length body, keep-alive, `Expect:
100-continue`. Chunked bodies are refused (the upstream clients never send them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus

MAX_HEAD_BYTES = 16 << 10  # request line + headers; a longer head is answered 431
MAX_HEADERS = 100
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_VERSION = re.compile(rb"HTTP/1\.[01]")
_DIGITS = re.compile(r"[0-9]{1,18}")
END_OF_HEAD = b"\r\n\r\n"


class HttpError(Exception):
    """A request the front answers with `status` and closes: it cannot be read any further."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Head:
    method: str
    path: str
    version: str
    headers: dict[str, str]  # lower-case names

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"

    @property
    def expects_continue(self) -> bool:
        return self.headers.get("expect", "").lower() == "100-continue"

    def content_length(self) -> int | None:
        """The body's length; None when the head declares none (or a chunked body)."""
        if "transfer-encoding" in self.headers:
            return None
        value = self.headers.get("content-length")
        if value is None:
            return None
        if not _DIGITS.fullmatch(value.strip()):
            raise HttpError(400, f"invalid Content-Length {value[:40]!r}")
        return int(value)


def parse_head(data: bytes) -> Head:
    """The head's bytes, up to and without the blank line -> Head; HttpError if malformed."""
    if len(data) > MAX_HEAD_BYTES:
        raise HttpError(431, f"request head over {MAX_HEAD_BYTES} bytes")
    request_line, *header_lines = data.split(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise HttpError(400, f"malformed request line {request_line[:80]!r}")
    if not _VERSION.fullmatch(parts[2]):
        raise HttpError(505, f"unsupported protocol {parts[2][:20]!r}: HTTP/1.0 or HTTP/1.1")
    if len(header_lines) > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):  # also folded (obsolete) continuation lines
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        key, text = name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")
        if key == "content-length" and headers.get(key, text) != text:
            raise HttpError(400, "conflicting Content-Length headers")
        headers[key] = text
    return Head(parts[0].decode("ascii"), parts[1].decode("ascii"), parts[2].decode("ascii"),
                headers)


def render_response(status: int, body: bytes, content_type: str, close: bool,
                    extra: dict[str, str] | None = None) -> bytes:
    """Status line, headers and body, ready for one write."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
             "Server: paddle-vision-serving", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
