"""Fuzzing what a client controls: the HTTP request head and body parsers and the image checks
and decoder. Whatever the bytes, the only outcomes are a parsed value or the project's own
refusal (HttpError, ValueError, RequestError), and an image that passes the checks decodes to
the size its header declared, within the limits. `make test` runs a bounded pass (tests/
conftest.py, profile "default"); `make fuzz` a long one (profile "fuzz")."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.errors import RequestError
from model.request import Limits, check_image, decode_checked
from serving.http_front import _parse_body
from serving.http_wire import Head, HttpError, parse_head, render_response

LIMITS = Limits(max_image_bytes=1 << 20, max_image_pixels=1_000_000)
TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~",
                min_size=1, max_size=20)
HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    str.strip)


@given(st.binary(max_size=2000))
def test_any_bytes_are_a_head_or_an_http_error(data: bytes) -> None:
    try:
        head = parse_head(data)
    except HttpError as error:
        assert 400 <= error.status < 600
        return
    assert isinstance(head, Head)
    try:
        length = head.content_length()
    except HttpError as error:
        assert error.status == 400
    else:
        assert length is None or length >= 0


@given(st.sampled_from(["GET", "POST", "PUT"]), st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30).map(lambda p: "/" + p),
    st.dictionaries(TOKEN, HEADER_VALUE, max_size=10))
def test_a_well_formed_head_parses_to_what_was_sent(method: str, path: str,
                                                    headers: dict[str, str]) -> None:
    lines = [f"{method} {path} HTTP/1.1", *(f"{name}: {value}" for name, value in
                                           headers.items())]
    unique = {name.lower() for name in headers}
    head = parse_head("\r\n".join(lines).encode())
    assert (head.method, head.path, head.version) == (method, path, "HTTP/1.1")
    assert set(head.headers) == unique
    if len(unique) == len(headers):
        assert head.headers == {name.lower(): value for name, value in headers.items()}


@given(st.integers(100, 599).filter(lambda s: s not in (100, 101, 102, 103) and s >= 200),
       st.binary(max_size=200), st.booleans())
def test_a_rendered_response_declares_its_body(status: int, body: bytes, close: bool) -> None:
    try:
        response = render_response(status, body, "application/json", close)
    except ValueError:  # not a status http.HTTPStatus knows: never rendered by the front
        return
    head, _, rest = response.partition(b"\r\n\r\n")
    assert rest == body
    assert f"Content-Length: {len(body)}".encode() in head.split(b"\r\n")
    assert (b"Connection: close" in head.split(b"\r\n")) == close


@given(st.one_of(st.binary(max_size=500), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=20).map(lambda value: __import__("json").dumps(value).encode())))
def test_any_body_is_a_request_or_a_value_error(body: bytes) -> None:
    try:
        request = _parse_body(body, "peach")
    except ValueError:
        return
    assert len(request.key) == len(request.value)


def _png(width: int, height: int) -> bytes:
    return cv2.imencode(".png", np.full((height, width, 3), 90, np.uint8))[1].tobytes()


def _jpeg(width: int, height: int) -> bytes:
    return cv2.imencode(".jpg", np.full((height, width, 3), 90, np.uint8))[1].tobytes()


SEEDS = [_png(20, 10), _jpeg(16, 12), cv2.imencode(".bmp", np.zeros((5, 7, 3), np.uint8))[1]
         .tobytes(), cv2.imencode(".webp", np.zeros((9, 9, 3), np.uint8))[1].tobytes()]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A real image with a few bytes changed, cut short or grown."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(1, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=16))


@st.composite
def png_headers(draw: st.DrawFn) -> bytes:
    """A valid PNG whose IHDR claims any size (CRC fixed): a bomb, or a lie."""
    data = bytearray(_png(4, 4))
    width, height = draw(st.integers(1, 2**31 - 1)), draw(st.integers(1, 2**31 - 1))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), mutated_images(), png_headers()))
def test_any_image_bytes_are_refused_or_decode_within_the_limits(data: bytes) -> None:
    import base64

    try:
        checked = check_image("image", base64.b64encode(data).decode(), LIMITS)
        pixels = decode_checked(checked)
    except RequestError as error:
        assert error.code.name in {"NOT_AN_IMAGE", "TOO_MANY_PIXELS", "EMPTY_IMAGE",
                                   "IMAGE_TOO_LARGE"}, error
        return
    assert checked.pixels <= LIMITS.max_image_pixels
    assert pixels.shape == (checked.height, checked.width, 3)
