"""What deploy/image/Containerfile declares about the image it builds: user, working dir,
environment, entrypoint, ports. The tests compare it with the built image and the manifests."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from deploy.image import CONTAINERFILE


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, ...
    arguments: str  # the rest, continuation lines joined


@dataclass
class DeclaredImage:
    user: str = ""
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    exposed: list[int] = field(default_factory=list)
    build_args: dict[str, str | None] = field(default_factory=dict)  # ARG name -> default


def instructions(text: str) -> list[Instruction]:
    """Instructions in order; comments dropped, backslash continuations joined."""
    logical = text.replace("\\\n", " ")
    found = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            found.append(Instruction(keyword.upper(), arguments.strip()))
    return found


def declared_image(path: Path = CONTAINERFILE) -> DeclaredImage:
    image = DeclaredImage()
    for instruction in instructions(path.read_text(encoding="utf-8")):
        keyword, arguments = instruction.keyword, instruction.arguments
        if keyword == "ENV":
            image.env.update(pair.split("=", 1) for pair in shlex.split(arguments))
        elif keyword == "USER":
            image.user = arguments
        elif keyword == "WORKDIR":
            image.workdir = arguments
        elif keyword == "ENTRYPOINT":
            image.entrypoint = json.loads(arguments)  # exec form only: no shell as PID 1
        elif keyword == "EXPOSE":
            image.exposed = [int(port.split("/")[0]) for port in arguments.split()]
        elif keyword == "ARG":
            name, sep, default = arguments.partition("=")
            image.build_args[name] = default if sep else None
    return image
