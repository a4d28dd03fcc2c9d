"""The stable error codes of a prediction: what a client sees in `err_no`/`err_msg`, and the HTTP
status the project's HTTP front answers with. Codes keep Paddle Serving's ranges (3000s service,
5000s user input, 6000 timeout, 10000 other, as its pipeline/error_catch.py numbers them), so
upstream clients keep working; 5000 stays the generic "bad request". Never renumber a code:
clients match on them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    err_no: int
    http_status: int
    name: str
    meaning: str


CODES: tuple[ErrorCode, ...] = (
    ErrorCode(3001, 503, "DRAINING", "the service is stopping; retry on another instance"),
    ErrorCode(3002, 404, "NO_SERVICE", "no service of that name on this port"),
    ErrorCode(3003, 503, "NOT_READY", "the model is not loaded yet (or its worker died)"),
    ErrorCode(3004, 503, "OVERLOADED", "max_inflight requests in flight in the service, or "
              "max_connections HTTP connections open on its worker; retry later"),
    ErrorCode(5000, 400, "BAD_REQUEST", "the body is not a {key: [...], value: [...]} request"),
    ErrorCode(5001, 400, "MISSING_IMAGE", "no `image` / `image_<i>` key in the request"),
    ErrorCode(5002, 400, "UNKNOWN_KEY", "a key that is neither `image` nor `image_<i>`"),
    ErrorCode(5003, 400, "INVALID_BASE64", "a value is not valid base64 (or is truncated)"),
    ErrorCode(5004, 400, "EMPTY_IMAGE", "an empty value (a 0-byte image)"),
    ErrorCode(5005, 422, "NOT_AN_IMAGE", "the bytes are not a decodable JPEG/PNG/BMP/WebP image"),
    ErrorCode(5006, 413, "TOO_MANY_IMAGES", "more images in one request than max_images"),
    ErrorCode(5007, 413, "IMAGE_TOO_LARGE", "one encoded image is over max_image_bytes"),
    ErrorCode(5008, 413, "TOO_MANY_PIXELS", "width x height of an image over max_image_pixels, "
              "or of all a request's images over max_request_pixels (read from the headers "
              "before any image is decoded: decompression bombs are never decoded)"),
    ErrorCode(5009, 413, "BODY_TOO_LARGE", "the HTTP body is over max_body_bytes"),
    ErrorCode(6000, 504, "TIMEOUT", "upstream's answer to an op `timeout`: never sent by this "
              "project's services, which run no op timeout (a predictor call cannot be stopped)"),
    ErrorCode(10000, 500, "INTERNAL", "an unexpected server-side failure, e.g. the model "
              "failing on an input (see the service log)"),
)
BY_NAME = {code.name: code for code in CODES}
BY_NUMBER = {code.err_no: code for code in CODES}
OK = 0


class RequestError(Exception):
    """A request the model or its service refuses; `code` is one of CODES."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.code = BY_NAME[name]

    @property
    def err_no(self) -> int:
        return self.code.err_no


def http_status(err_no: int) -> int:
    """The HTTP status for an err_no; upstream codes we do not list are server-side (500)."""
    if err_no == OK:
        return 200
    known = BY_NUMBER.get(err_no)
    return known.http_status if known else 500


def outcome(err_no: int) -> str:
    """A small, fixed label set for metrics: ok, client_error, rejected, server_error."""
    status = http_status(err_no)
    if status < 400:
        return "ok"
    if status == 503:
        return "rejected"
    return "client_error" if status < 500 else "server_error"


def markdown_table() -> str:
    """The table for the README (kept generated so docs cannot drift from the code)."""
    rows = [f"| {c.err_no} | {c.http_status} | {c.name} | {c.meaning} |" for c in CODES]
    return "\n".join(["| err_no | HTTP | name | meaning |", "|---|---|---|---|", *rows])
