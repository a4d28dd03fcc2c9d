"""Service-level settings (not config.yml ones): which HTTP front, which interface, request limits,
drain time. They share the `--runtime key=value` / model.yml `runtime:` mechanism with
serving.config, which leaves these keys to this module."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from serving.limits import Limits

FRONTS = ("project", "upstream")
SERVICE_DEFAULTS: dict[str, Any] = {
    # project: our HTTP/1.1 front + gRPC server inside the service process (health, metrics,
    # HTTP status codes, 127.0.0.1). upstream: Paddle Serving's Go gateway (binds every
    # interface, always HTTP 200, no health) - kept as the benchmark's reference.
    "http_front": "project",
    "host": "127.0.0.1",  # interface both ports bind (0.0.0.0 = all)
    "drain_timeout_s": 10,  # on SIGTERM: longest wait for in-flight requests
    "max_inflight": 256,  # concurrent requests per service before 503 OVERLOADED
    # Keep freed image buffers mapped for the next request (serving.memory): traffic_light
    # paid ~700 page faults per request without it.
    "reuse_freed_memory": True,
    # With several workers, each runs on its own share of the cores (serving.cores).
    "pin_workers": True,
    # Paddle's executor frees intermediate tensors on a spinning helper thread (serving.process).
    "free_intermediate_tensors": False,
    **{f.name: f.default for f in fields(Limits)},
}


@dataclass(frozen=True)
class ServiceOptions:
    http_front: str
    host: str
    drain_timeout_s: int
    max_inflight: int
    reuse_freed_memory: bool
    pin_workers: bool
    free_intermediate_tensors: bool
    limits: Limits


TEXT_OPTIONS = ("http_front", "host")
BOOL_OPTIONS = ("reuse_freed_memory", "pin_workers", "free_intermediate_tensors")


def parse_bool(name: str, value: Any) -> bool:
    """true/false, 1/0, yes/no (any case), or a bool."""
    if isinstance(value, str):
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"runtime {name}: expected true/false, got {value!r}")
        return value.lower() in ("true", "1", "yes")
    return bool(value)


def resolve_options(spec_runtime: Mapping[str, Any],
                    overrides: Mapping[str, Any] | None = None) -> ServiceOptions:
    values = {**SERVICE_DEFAULTS, **spec_runtime, **(overrides or {})}
    values = {key: value for key, value in values.items() if key in SERVICE_DEFAULTS}
    if values["http_front"] not in FRONTS:
        raise ValueError(f"runtime http_front: expected one of {FRONTS}, got "
                         f"{values['http_front']!r}")
    numbers = {}
    for key, value in values.items():
        if key in TEXT_OPTIONS + BOOL_OPTIONS:
            continue
        try:
            numbers[key] = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"runtime {key}: expected an integer, got {value!r}") from None
        if numbers[key] < 1:
            raise ValueError(f"runtime {key}: must be >= 1, got {value!r}")
    limits = Limits(**{f.name: numbers[f.name] for f in fields(Limits)})
    return ServiceOptions(http_front=str(values["http_front"]), host=str(values["host"]),
                          drain_timeout_s=numbers["drain_timeout_s"],
                          max_inflight=numbers["max_inflight"],
                          **{name: parse_bool(name, values[name]) for name in BOOL_OPTIONS},
                          limits=limits)
