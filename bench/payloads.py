"""The benchmark's requests: real generated validation images, encoded once, before any timing.

Every request carries one JPEG. The bytes each transport sends (the HTTP request with its headers,
the serialized gRPC message) are built here, so the load generator only writes prepared bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from serving.protocol import request_items

TRAFFIC_LIGHT_SEED = 0  # train.traffic_light_data.DatasetSpec's default seed
PEACH_SEED = 0


def peach_images(count: int) -> list[bytes]:
    """The first `count` peach validation images (train/peach_data.py's generator)."""
    from train.peach_data import generate_samples

    return [sample.jpeg for sample in generate_samples("val", count, PEACH_SEED)]


def traffic_light_images(count: int) -> list[bytes]:
    """The first `count` cluttered validation scenes, with the per-image random stream and JPEG
    quality train/traffic_light_data.py uses for its `valid` split."""
    from train.traffic_light_data import HARD, render_scene

    split_key = sum(map(ord, "valid"))
    images = []
    for index in range(count):
        rng = np.random.default_rng([TRAFFIC_LIGHT_SEED, split_key, index])
        rgb, _ = render_scene(rng, HARD)
        quality = int(rng.integers(85, 96))
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        images.append(jpeg.tobytes())
    return images


GENERATORS = {"classification": peach_images, "detection": traffic_light_images}


def validation_images(task: str, count: int) -> list[bytes]:
    """Generated validation JPEGs of the task's built-in dataset."""
    if task not in GENERATORS:
        raise ValueError(f"no image generator for task {task!r}; known: {sorted(GENERATORS)}")
    return GENERATORS[task](count)


@dataclass(frozen=True)
class Payloads:
    """One image per request, pre-encoded for each transport."""

    jpegs: list[bytes]
    http_bodies: list[bytes]  # JSON bodies of POST /<service>/prediction
    rpc_messages: list[bytes]  # serialized pipeline Request messages

    def http_requests(self, host: str, port: int, service: str) -> list[bytes]:
        """Complete HTTP/1.1 keep-alive requests: headers + body, ready to write to a socket."""
        return [(f"POST /{service}/prediction HTTP/1.1\r\nHost: {host}:{port}\r\n"
                 "Content-Type: application/json\r\nConnection: keep-alive\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n").encode("ascii") + body
                for body in self.http_bodies]


def encode_payloads(jpegs: list[bytes]) -> Payloads:
    import json

    from paddle_serving_server.pipeline.proto import pipeline_service_pb2

    http_bodies, rpc_messages = [], []
    for jpeg in jpegs:
        items = request_items([jpeg])
        http_bodies.append(json.dumps({"key": list(items), "value": list(items.values()),
                                       "logid": 0}).encode())
        message = pipeline_service_pb2.Request(key=list(items), value=list(items.values()))
        rpc_messages.append(message.SerializeToString())
    return Payloads(jpegs=jpegs, http_bodies=http_bodies, rpc_messages=rpc_messages)
