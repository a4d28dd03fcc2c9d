"""A prediction request's images, checked against the limits before any pixel is decoded.

Request: {"image": <base64>} or {"image_0": <base64>, "image_1": ...} (the PaddleClas and
PaddleDetection client shapes); several images are one batch. Sizes are refused from the base64
length, then the decoded byte count, then the image header (a 20000 x 20000 PNG of a few KB would
otherwise expand to 1.2 GB), each before the next step's work; the headers of all a request's
images are read, and their pixels added up against the request's budget, before any is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from model.errors import RequestError
from model.preprocess import decode_image

# cv2.imdecode (model.preprocess.decode_image) reads these; the header check accepts the same.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")
_IMAGE_KEY = re.compile(r"^image(?:_(\d+))?$")
# Keys the pipeline itself may add to a request (dag.py: "pipeline.profile" asks for timings).
PIPELINE_KEYS = frozenset({"pipeline.profile"})


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 16 << 20  # HTTP body, and the gRPC max receive message length
    max_images: int = 32  # images in one request (one batch)
    max_image_bytes: int = 8 << 20  # one encoded image
    max_image_pixels: int = 25_000_000  # width x height of one image (5000 x 5000)
    max_request_pixels: int = 100_000_000  # the pixels of all the images of one request


@dataclass(frozen=True)
class CheckedImage:
    """One image of a request, within the limits, not decoded yet."""

    key: str
    data: bytes  # the encoded image
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


DEFAULT_LIMITS = Limits()


def image_keys(request: Mapping[str, Any], max_images: int = DEFAULT_LIMITS.max_images
               ) -> list[str]:
    """The request's image keys: `image`, or `image_0`, `image_1`, ... in index order."""
    keys = [key for key in request if _IMAGE_KEY.match(key)]
    unknown = sorted(set(request) - set(keys) - PIPELINE_KEYS)
    if unknown:
        raise RequestError("UNKNOWN_KEY", f"unknown key(s) {unknown}: send key 'image' or "
                           "'image_0', 'image_1', ... with base64-encoded image bytes")
    if not keys:
        raise RequestError("MISSING_IMAGE", "no image in the request: send key 'image' or "
                           "'image_0', 'image_1', ... with base64-encoded image bytes")
    if len(keys) > max_images:
        raise RequestError("TOO_MANY_IMAGES", f"{len(keys)} images in one request; the limit "
                           f"is {max_images}")
    return sorted(keys, key=lambda key: int(_IMAGE_KEY.match(key).group(1) or -1))  # type: ignore[union-attr]


def check_request(request: Mapping[str, Any], limits: Limits) -> list[CheckedImage]:
    """The request's images in key order, each checked (check_image), and their pixels added
    up against max_request_pixels: nothing is decoded yet."""
    images = [check_image(key, request[key], limits)
              for key in image_keys(request, limits.max_images)]
    total = sum(image.pixels for image in images)
    if total > limits.max_request_pixels:
        raise RequestError("TOO_MANY_PIXELS", f"{len(images)} images of {total} pixels in all; "
                           f"the limit is {limits.max_request_pixels} pixels per request")
    return images


def check_image(key: str, value: Any, limits: Limits) -> CheckedImage:
    """base64 -> encoded bytes within the byte limit, with a header within the pixel limit."""
    data = decode_base64(key, value, limits)
    if len(data) > limits.max_image_bytes:
        raise RequestError("IMAGE_TOO_LARGE", f"{key}: {len(data)} bytes; the limit is "
                           f"{limits.max_image_bytes} bytes per image")
    width, height = check_image_header(key, data, limits)
    return CheckedImage(key, data, width, height)


def decode_checked(image: CheckedImage) -> np.ndarray:
    """A checked image -> RGB pixels."""
    try:
        return decode_image(image.data)
    except ValueError as error:
        raise RequestError("NOT_AN_IMAGE", f"{image.key}: {error}") from None


def decode_base64(key: str, value: Any, limits: Limits = DEFAULT_LIMITS) -> bytes:
    if not isinstance(value, str | bytes):
        raise RequestError("INVALID_BASE64",
                           f"{key}: expected a base64 string, got {type(value).__name__}")
    try:  # the usual payload, one unbroken line: one C pass (the path below copies it twice)
        check_encoded_size(key, len(value), limits)
        data = binascii.a2b_base64(value, strict_mode=True)
    except (RequestError, binascii.Error, ValueError):  # size: line breaks may be what is over
        return _decode_wrapped_base64(key, value, limits)
    if not data:
        raise RequestError("EMPTY_IMAGE", f"{key}: empty value (expected base64 image bytes)")
    return data


def _decode_wrapped_base64(key: str, value: str | bytes, limits: Limits) -> bytes:
    """Base64 with line breaks (MIME style), or invalid: the error says what is wrong."""
    text = value.decode("latin1") if isinstance(value, bytes) else value
    compact = "".join(text.split())
    if not compact:
        raise RequestError("EMPTY_IMAGE", f"{key}: empty value (expected base64 image bytes)")
    check_encoded_size(key, len(compact), limits)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError("INVALID_BASE64", f"{key}: invalid base64 ({error})") from None
    if not data:
        raise RequestError("EMPTY_IMAGE", f"{key}: empty image (0 bytes)")
    return data


def check_encoded_size(key: str, base64_chars: int, limits: Limits) -> None:
    """Refuse an oversized image from its base64 length, before decoding it."""
    if base64_chars // 4 * 3 > limits.max_image_bytes + 3:
        raise RequestError("IMAGE_TOO_LARGE", f"{key}: about {base64_chars // 4 * 3} bytes; the "
                           f"limit is {limits.max_image_bytes} bytes per image")


def check_image_header(key: str, data: bytes, limits: Limits) -> tuple[int, int]:
    """(width, height) from the header only; raises RequestError for non-images and images over
    the pixel limit. PIL's open() parses the header and defers decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                width, height = image.size
    except Image.DecompressionBombError as error:  # PIL's own cap (2 x 89 MP) fires first
        raise RequestError("TOO_MANY_PIXELS", f"{key}: {error}; the limit is "
                           f"{limits.max_image_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise RequestError("NOT_AN_IMAGE", f"{key}: not a decodable image (expected "
                           f"{', '.join(IMAGE_FORMATS)} bytes)") from None
    if width * height > limits.max_image_pixels:
        raise RequestError("TOO_MANY_PIXELS", f"{key}: {width}x{height} = {width * height} "
                           f"pixels; the limit is {limits.max_image_pixels} pixels")
    return width, height
