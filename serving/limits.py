"""Request limits of the services, and the header-only image size check that enforces the pixel
limit before any decoding (a 20000 x 20000 PNG of a few KB would otherwise expand to 1.2 GB)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from serving.errors import ServiceError

# cv2.imdecode (serving.preprocess.decode_image) reads these; the header check accepts the same.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 16 << 20  # HTTP body, and the gRPC max receive message length
    max_images: int = 32  # images in one request (one batch)
    max_image_bytes: int = 8 << 20  # one encoded image
    max_image_pixels: int = 25_000_000  # width x height of one image (5000 x 5000)


def check_encoded_size(key: str, base64_chars: int, limits: Limits) -> None:
    """Refuse an oversized image from its base64 length, before decoding it."""
    if base64_chars // 4 * 3 > limits.max_image_bytes + 3:
        raise ServiceError("IMAGE_TOO_LARGE", f"{key}: about {base64_chars // 4 * 3} bytes; the "
                           f"limit is {limits.max_image_bytes} bytes per image")


def check_image_header(key: str, data: bytes, limits: Limits) -> tuple[int, int]:
    """(width, height) from the header only; raises ServiceError for non-images and images over
    the pixel limit. PIL's open() parses the header and defers decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                width, height = image.size
    except Image.DecompressionBombError as error:  # PIL's own cap (2 x 89 MP) fires first
        raise ServiceError("TOO_MANY_PIXELS", f"{key}: {error}; the limit is "
                           f"{limits.max_image_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ServiceError("NOT_AN_IMAGE", f"{key}: not a decodable image (expected "
                           f"{', '.join(IMAGE_FORMATS)} bytes)") from None
    if width * height > limits.max_image_pixels:
        raise ServiceError("TOO_MANY_PIXELS", f"{key}: {width}x{height} = {width * height} "
                           f"pixels; the limit is {limits.max_image_pixels} pixels")
    return width, height
