"""`make image` (python -m deploy.image): the service image, built with no container registry.

1. The base: a Debian bookworm root filesystem made by debootstrap from Debian's packages, with
   the apt sources of debian:bookworm-slim and no package caches, turned into an image by
   `podman import`. It is kept and reused until --rebuild-base.
2. The image: deploy/image/Containerfile run on that base by `podman build`, the same file a
   connected machine builds on debian:bookworm-slim.

Prints the image's size and how long each stage took, and writes them to build/image/build.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from deploy.podman import CONTAINERS_CONF, PodmanError, environment, image_exists, inspect

ROOT = Path(__file__).resolve().parents[1]
CONTAINERFILE = ROOT / "deploy" / "image" / "Containerfile"
WORK_DIR = ROOT / "build" / "image"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
IMAGE = "localhost/paddle-vision-serving"
BASE_IMAGE = f"localhost/paddle-vision-serving-base:{SUITE}"
# Where the build sees the host's CA bundle, for pip behind a TLS-inspecting proxy.
BUILD_CA_PATH = "/run/host-ca.crt"
# debian:bookworm-slim's apt sources (release, updates, security), so both bases update alike.
DEBIAN_SOURCES = f"""\
Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {MIRROR}-security
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
REQUIRED_TOOLS = ("debootstrap", "podman", "tar")


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)["project"]["version"]


def image_ref() -> str:
    """The image `make image` builds: tagged with the project's version."""
    return f"{IMAGE}:{project_version()}"


def build_base(work_dir: Path) -> None:
    rootfs = work_dir / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    _run(["debootstrap", "--variant=minbase", SUITE, str(rootfs), MIRROR], "debootstrap")
    tidy_rootfs(rootfs)
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
                           stdout=subprocess.PIPE)
    imported = subprocess.run(["podman", "import", "-", BASE_IMAGE], stdin=tar.stdout,
                              env=environment(), capture_output=True, text=True)
    tar.stdout.close()
    if tar.wait() != 0 or imported.returncode != 0:
        raise PodmanError(f"importing {rootfs} as {BASE_IMAGE} failed: {imported.stderr}")
    shutil.rmtree(rootfs)


def tidy_rootfs(rootfs: Path) -> None:
    """What debootstrap leaves that an image must not carry: downloaded packages and lists,
    the build host's resolv.conf and hostname (podman provides both at run time)."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*"):
        for path in rootfs.glob(pattern):
            path.unlink()
    for name in ("etc/resolv.conf", "etc/hostname"):
        (rootfs / name).write_text("")
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(DEBIAN_SOURCES)


def host_ca_bundle() -> Path | None:
    """The CA bundle pip trusts on this host (PIP_CERT, else OpenSSL's default file)."""
    candidate = os.environ.get("PIP_CERT") or ssl.get_default_verify_paths().cafile
    return Path(candidate) if candidate and Path(candidate).is_file() else None


def build_image(ref: str, no_cache: bool) -> None:
    args = ["podman", "build", "--network", "host", "--pull=never",
            "--build-arg", f"BASE={BASE_IMAGE}", "--file", str(CONTAINERFILE), "--tag", ref]
    ca_bundle = host_ca_bundle()
    if ca_bundle:
        args += ["--volume", f"{ca_bundle}:{BUILD_CA_PATH}:ro",
                 "--build-arg", f"PIP_CERT={BUILD_CA_PATH}"]
    if no_cache:
        args.append("--no-cache")
    _run([*args, str(ROOT)], "podman build")


def _run(command: list[str], what: str) -> None:
    """Runs a long build step with its output on the terminal."""
    print(f"$ {' '.join(command)}", flush=True)
    if subprocess.run(command, env=environment()).returncode != 0:
        raise PodmanError(f"{what} failed; its output is above")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.image", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rebuild-base", action="store_true",
                        help=f"make {BASE_IMAGE} again with debootstrap (newer packages)")
    parser.add_argument("--no-cache", action="store_true",
                        help="rebuild every Containerfile step instead of reusing cached layers")
    args = parser.parse_args(argv)
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"error: {', '.join(missing)} not found: `make image` installs them "
              "(apt-get install debootstrap podman runc)", file=sys.stderr)
        return 1
    ref, timings = image_ref(), {}
    try:
        started = time.monotonic()
        if args.rebuild_base or not image_exists(BASE_IMAGE):
            build_base(WORK_DIR)
            timings["base_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        build_image(ref, args.no_cache)
        timings["build_s"] = round(time.monotonic() - started, 1)
    except PodmanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    size = int(inspect("image", ref)["Size"])
    report = {"image": ref, "size_bytes": size, **timings,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    (WORK_DIR / "build.json").write_text(json.dumps(report, indent=2) + "\n")
    stages = ", ".join(f"{key[:-2]} {value:.0f} s" for key, value in timings.items())
    print(f"built {ref}: {size / 1e9:.2f} GB ({stages}); run one model with\n"
          f"  CONTAINERS_CONF={CONTAINERS_CONF.relative_to(ROOT)} podman run --rm "
          f"-p 127.0.0.1:18080:18080 {ref} --model peach")
    return 0


if __name__ == "__main__":
    sys.exit(main())
