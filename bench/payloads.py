"""The benchmark's requests: each model's sample images (its description's `samples:`), encoded
once, before any timing.

Every request carries one JPEG. The bytes each transport sends (the HTTP request with its headers,
the serialized gRPC message) are built here, so the load generator only writes prepared bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.protocol import request_items


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
