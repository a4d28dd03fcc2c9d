"""deploy/k8s and deploy/image/Containerfile, offline and fast: every kustomization renders and
validates against the pinned Kubernetes schema, and the manifests agree with the image and with
the service they run (ports, probes, drain time, writable paths, user)."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest

from deploy import image, manifests
from deploy.containerfile import declared_image, instructions
from model.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
STOP_MARGIN_S = 5  # after the drain: stopping the worker threads and exiting


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[manifests.Manifest]]:
    return {name: manifests.render(name) for name in manifests.KUSTOMIZATIONS}


def _deployments(rendered: dict[str, list[manifests.Manifest]]) -> list[manifests.Manifest]:
    return [doc for docs in rendered.values() for doc in manifests.of_kind(docs, "Deployment")]


def _flags(args: list[str], flag: str) -> list[str]:
    return [value for option, value in itertools.pairwise(args) if option == flag]


def _runtime(args: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in _flags(args, "--runtime"))


@pytest.mark.parametrize("kustomization", manifests.KUSTOMIZATIONS)
def test_manifests_validate_against_the_pinned_kubernetes_schema(rendered, kustomization) -> None:
    docs = rendered[kustomization]
    assert {"Deployment", "Service", "HorizontalPodAutoscaler",
            "PodDisruptionBudget"} <= {doc["kind"] for doc in docs}
    assert manifests.validate(docs) == []
    assert manifests.check_service_monitors(docs) == []


def test_validation_rejects_unknown_fields_and_wrong_types(rendered) -> None:
    deployment = copy.deepcopy(manifests.by_name(rendered["base"], "Deployment", "peach"))
    manifests.container(deployment)["readinesProbe"] = {}
    autoscaler = copy.deepcopy(manifests.of_kind(rendered["base"], "HorizontalPodAutoscaler")[0])
    autoscaler["spec"]["maxReplicas"] = "8"
    errors = manifests.validate([deployment, autoscaler])
    assert len(errors) == 2 and "readinesProbe" in errors[0] and "maxReplicas" in errors[1]


def test_the_monitoring_overlay_scrapes_every_model_service(rendered) -> None:
    docs = rendered["overlays/monitoring"]
    assert len(manifests.of_kind(docs, "ServiceMonitor")) == 1
    broken = copy.deepcopy(docs)
    manifests.of_kind(broken, "ServiceMonitor")[0]["spec"]["endpoints"][0]["port"] = "metrics"
    assert len(manifests.check_service_monitors(broken)) == len(
        manifests.of_kind(docs, "Service"))


def test_each_deployment_serves_a_model_on_the_ports_it_declares(rendered) -> None:
    for deployment in _deployments(rendered):
        spec = manifests.container(deployment)
        args = spec["args"]
        (model,) = _flags(args, "--model")
        assert (ROOT / "models" / model / "model.yml").is_file(), model
        (ports,) = _flags(args, "--port")
        name, _, pair = ports.partition("=")
        http, rpc = (int(port) for port in pair.split(":"))
        assert name == model
        assert manifests.port_number(spec, "http") == http
        assert manifests.port_number(spec, "grpc") == rpc
        pod = deployment["spec"]["template"]
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(http)
        # Left to its default, worker_num follows the cores the process sees: the node's.
        assert int(_runtime(args)["worker_num"]) >= 1


def test_probes_use_the_health_endpoints_on_the_http_port(rendered) -> None:
    for deployment in _deployments(rendered):
        spec = manifests.container(deployment)
        paths = {kind: spec[kind]["httpGet"]["path"]
                 for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
        assert paths == {"startupProbe": "/health/ready", "readinessProbe": "/health/ready",
                         "livenessProbe": "/health/live"}
        assert {spec[kind]["httpGet"]["port"] for kind in paths} == {"http"}


def test_grace_period_covers_prestop_and_the_drain(rendered) -> None:
    for deployment in _deployments(rendered):
        spec = manifests.container(deployment)
        command = spec["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        drain = int(_runtime(spec["args"]).get("drain_timeout_s", Settings().drain_timeout_s))
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= int(command[1]) + drain + STOP_MARGIN_S


def test_pods_run_as_the_image_user_with_every_written_path_on_a_volume(rendered) -> None:
    declared = declared_image()
    uid, gid = (int(part) for part in declared.user.split(":"))
    # Where the service writes (docs/deploy.md): the rendered config.yml (a link into /tmp in
    # the image), paddle's ~/.cache, the pipeline's logs, temporary files.
    written = {"/tmp", declared.env["HOME"], declared.env["SERVING_LOG_PATH"]}
    for deployment in _deployments(rendered):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
            uid, gid)
        spec = manifests.container(deployment)
        assert spec["securityContext"]["readOnlyRootFilesystem"] is True
        mounted = {mount["mountPath"] for mount in spec["volumeMounts"]}
        assert all(any(Path(path).is_relative_to(m) for m in mounted) for path in written)
        empty_dirs = {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume}
        assert {mount["name"] for mount in spec["volumeMounts"]} <= empty_dirs


def test_services_autoscalers_and_budgets_select_their_deployment(rendered) -> None:
    for docs in rendered.values():
        for deployment in manifests.of_kind(docs, "Deployment"):
            name = deployment["metadata"]["name"]
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            service = manifests.by_name(docs, "Service", name)
            assert service["spec"]["selector"].items() <= labels.items()
            spec = manifests.container(deployment)
            assert {manifests.port_number(spec, port["targetPort"])
                    for port in service["spec"]["ports"]} == {
                        port["containerPort"] for port in spec["ports"]}
            budget = manifests.by_name(docs, "PodDisruptionBudget", name)
            assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
            autoscaler = manifests.by_name(docs, "HorizontalPodAutoscaler", name)
            assert autoscaler["spec"]["scaleTargetRef"]["name"] == name
            assert 1 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]
            resources = spec["resources"]
            assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_the_image_tag_is_the_project_version(rendered) -> None:
    images = {manifests.container(d)["image"] for d in manifests.of_kind(rendered["base"],
                                                                         "Deployment")}
    assert images == {f"paddle-vision-serving:{image.project_version()}"}
    local = {manifests.container(d)["image"] for d in manifests.of_kind(
        rendered["overlays/local"], "Deployment")}
    assert local == {image.image_ref()}


def test_the_offline_build_changes_only_the_base_of_the_containerfile() -> None:
    """`make image` and a connected `podman build` run the same file; the build arguments the
    offline build sets must not reach anything but FROM and the pip download."""
    steps = instructions(image.CONTAINERFILE.read_text(encoding="utf-8"))
    declared = declared_image()
    assert set(declared.build_args) == {"BASE", "PIP_CERT"}
    assert [step.arguments for step in steps if step.keyword == "FROM"] == ["${BASE}"]
    uses = [step for step in steps if "BASE" in step.arguments and step.keyword != "ARG"]
    assert [step.keyword for step in uses] == ["FROM"]
    assert "PIP_CERT" not in str(declared.env) and declared.entrypoint[:2] == ["/usr/bin/tini",
                                                                               "--"]
    assert "host=0.0.0.0" in declared.entrypoint  # inside the container only


def test_make_image_builds_that_file_setting_only_its_declared_arguments(monkeypatch) -> None:
    commands: list[list[str]] = []
    monkeypatch.setattr(image, "_run", lambda command, what: commands.append(command))
    image.build_image("localhost/example:1", no_cache=False)
    (command,) = commands
    assert command[command.index("--file") + 1] == str(image.CONTAINERFILE)
    set_args = {command[i + 1].split("=")[0] for i, part in enumerate(command)
                if part == "--build-arg"}
    assert "BASE" in set_args and set_args <= set(declared_image().build_args)
