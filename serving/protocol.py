"""The wire format of the pipeline services, shared by the clients and `python -m serving`.

Request: {"key": ["image"] or ["image_0", "image_1", ...], "value": [<base64 image>, ...]}.
Response: {"err_no": 0, "err_msg": "", "key": [<image key>, ...], "value": [<JSON result>, ...]}
with each result in the schema of model.postprocess.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np


def image_keys(count: int) -> list[str]:
    """`image` for one image (PaddleClas clients), `image_<i>` for several (PaddleDetection)."""
    return ["image"] if count == 1 else [f"image_{i}" for i in range(count)]


def request_items(images: Sequence[bytes]) -> dict[str, str]:
    return {key: base64.b64encode(data).decode("ascii")
            for key, data in zip(image_keys(len(images)), images, strict=True)}


def http_url(host: str, port: int, service: str) -> str:
    return f"http://{host}:{port}/{service}/prediction"


def post_http(url: str, items: dict[str, str], timeout: float) -> dict[str, Any]:
    """POST one prediction request; the answer keeps the upstream shape whatever the HTTP status
    (the project's front uses 4xx/5xx, the upstream gateway always 200). Raises OSError
    (URLError, timeout) when unreachable or when the answer is not a pipeline response."""
    body = json.dumps({"key": list(items), "value": list(items.values())}).encode()
    request = urllib.request.Request(url, data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            answer = _json_or_none(error.read())
        if not isinstance(answer, dict) or "err_no" not in answer:
            raise
        return answer


def get_json(url: str, timeout: float) -> tuple[int, dict[str, Any]]:
    """GET a JSON endpoint (health): (HTTP status, body); OSError when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, _json_or_none(error.read()) or {}


def health_url(host: str, port: int, probe: str = "ready") -> str:
    return f"http://{host}:{port}/health/{probe}"


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def decode_results(keys: Sequence[str], values: Sequence[str]) -> dict[str, Any]:
    return {key: json.loads(value) for key, value in zip(keys, values, strict=True)}


def probe_image() -> bytes:
    """A small synthetic JPEG that every image model accepts (readiness checks)."""
    gradient = np.linspace(0, 255, 256, dtype=np.uint8)
    rgb = np.stack([np.tile(gradient, (256, 1)), np.tile(gradient[:, None], (1, 256)),
                    np.full((256, 256), 128, np.uint8)], axis=-1)
    return cv2.imencode(".jpg", rgb)[1].tobytes()
