"""Where the serve stage reads and writes, and which ports each service uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from model.spec import DESCRIPTION_FILE, ModelSpec

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Layout:
    models_dir: Path = ROOT / "models"
    build_dir: Path = ROOT / "build"
    patches_dir: Path = ROOT / "prototxt_patches"

    def model_names(self) -> list[str]:
        return sorted(p.parent.name for p in self.models_dir.glob(f"*/{DESCRIPTION_FILE}"))

    def spec(self, name: str) -> ModelSpec:
        return ModelSpec.load(self.models_dir / name)

    def patch_file(self, spec: ModelSpec) -> Path:
        return self.patches_dir / f"{spec.prototxt_patch}.yml"

    def serving_dir(self, name: str) -> Path:  # working dir of the service (config.yml, logs)
        return self.build_dir / "serving" / name

    def serving_server(self, name: str) -> Path:
        return self.serving_dir(name) / "serving_server"

    def config_file(self, name: str) -> Path:
        return self.serving_dir(name) / "config.yml"

    def log_file(self, name: str) -> Path:
        return self.build_dir / "logs" / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.build_dir / "run" / f"{name}.json"


@dataclass(frozen=True)
class Ports:
    http: int
    rpc: int


def ports_for(spec: ModelSpec, cli: dict[str, Ports] | None = None) -> Ports:
    """CLI `--port NAME=HTTP:RPC` > env SERVING_<NAME>_HTTP_PORT / _RPC_PORT > model.yml."""
    if cli and spec.name in cli:
        return cli[spec.name]
    prefix = f"SERVING_{spec.name.upper()}_"
    return Ports(http=int(os.environ.get(prefix + "HTTP_PORT", spec.service.http_port)),
                 rpc=int(os.environ.get(prefix + "RPC_PORT", spec.service.rpc_port)))


def parse_port_flags(values: list[str]) -> dict[str, Ports]:
    ports = {}
    for value in values:
        name, _, pair = value.partition("=")
        http, _, rpc = pair.partition(":")
        if not (name and http.isdigit() and rpc.isdigit()):
            raise ValueError(f"--port expects NAME=HTTP:RPC (e.g. peach=18080:9993), got {value!r}")
        ports[name] = Ports(http=int(http), rpc=int(rpc))
    return ports
