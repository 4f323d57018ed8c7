"""deploy/ holds together: every Kubernetes manifest (base, and each overlay as
rendered) validates against the Kubernetes schemas of ``kubernetes-validate``
(offline, strict, a pinned version), the kustomizations name files and resources
that exist, the compose file parses and names what exists, and every VECTOROPS_*
variable that deploy/ sets is one the service it is given to reads (the names come
from the services' settings classes), with a value those settings accept."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
from deploy_manifests import (
    COMPOSE,
    COMPOSE_ENV_EXAMPLE,
    DEPLOY,
    DOCKERFILE,
    K8S,
    ServiceEnvironment,
    accepted_variables,
    bind_sources,
    compose_file,
    compose_service_environments,
    containers,
    dockerfile_env,
    env_file,
    k8s_service_environments,
    kustomization,
    kustomization_dirs,
    manifest_files,
    patch_paths,
    render,
    required_variables,
    resource_key,
    service_of_command,
    settings_type,
    yaml_documents,
)
from kubernetes_validate.utils import SchemaNotFoundError, all_versions
from kubernetes_validate.utils import ValidationError as SchemaError
from pydantic import ValidationError

from kit.config import DEFAULT_GRPC_PORTS, ENV_PREFIX, ServiceName, load_settings

# The oldest Kubernetes the manifests promise to work on (gRPC probes are GA from 1.27).
KUBERNETES_VERSION = "1.33"
OVERLAYS = sorted(path.parent for path in (K8S / "overlays").glob("*/kustomization.yaml"))


def _validate(doc: dict, where: str) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except SchemaError as error:
        path = ".".join(str(part) for part in error.path)
        pytest.fail(f"{where} {doc['kind']}/{doc['metadata']['name']}: {path}: {error.message}")
    except SchemaNotFoundError as error:
        pytest.fail(f"{where}: {error.message}")


# -- Kubernetes ------------------------------------------------------------------------------


def test_the_schemas_are_the_offline_pinned_ones() -> None:
    # A version kubernetes-validate ships, so nothing is fetched and nothing drifts.
    assert KUBERNETES_VERSION in {version.rsplit(".", 1)[0] for version in all_versions()}


def _patch_files() -> set[Path]:
    return {
        (folder / path).resolve()
        for folder in kustomization_dirs()
        for path in patch_paths(kustomization(folder))
    }


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_document_validates(path: Path) -> None:
    docs = yaml_documents(path)
    assert docs, f"{path} is empty"
    if path.resolve() in _patch_files():
        # A patch is a fragment: it is validated merged, in its rendered overlay.
        assert all(set(doc) >= {"apiVersion", "kind", "metadata"} for doc in docs)
        return
    for doc in docs:
        _validate(doc, str(path.relative_to(DEPLOY)))


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_each_rendered_overlay_validates(overlay: Path) -> None:
    docs = render(overlay)
    assert len({(*resource_key(d), d["metadata"].get("namespace")) for d in docs}) == len(docs)
    for doc in docs:
        _validate(doc, f"overlay {overlay.name}")
    # Every image change hits a container: a name that matches none changes nothing.
    images = {container["image"] for doc in docs for container in containers(doc)}
    for change in kustomization(overlay).get("images", []):
        assert any(image.startswith(change.get("newName", change["name"])) for image in images), (
            f"images: {change['name']} is the image of no container"
        )


def test_there_is_a_production_overlay_over_the_base() -> None:
    assert K8S / "overlays" / "production" in OVERLAYS
    assert kustomization(K8S / "overlays" / "production")["resources"] == ["../../base"]


@pytest.mark.parametrize("folder", kustomization_dirs(), ids=lambda p: str(p.relative_to(K8S)))
def test_kustomization_paths_exist_and_patches_hit_resources(folder: Path) -> None:
    spec = kustomization(folder)
    for entry in spec.get("resources", []):
        target = folder / entry
        assert target.exists(), f"{folder.name}: resource {entry} does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").is_file(), f"{entry} is no kustomization"
    listed = {(folder / entry).resolve() for entry in spec.get("resources", [])}
    own = {path.resolve() for path in folder.glob("*.yaml") if path.name != "kustomization.yaml"}
    patches = {(folder / path).resolve() for path in patch_paths(spec)}
    for path in patches:
        assert path.is_file(), f"{folder.name}: patch {path.name} does not exist"
    # A manifest nobody lists is one nobody deploys.
    assert own <= listed | patches, f"not in {folder}/kustomization.yaml: {own - listed - patches}"
    if patches:
        # Each patch names a resource of what it patches (render() raises otherwise).
        bases = [
            doc
            for entry in spec.get("resources", [])
            for doc in (
                render((folder / entry).resolve())
                if (folder / entry).is_dir()
                else yaml_documents(folder / entry)
            )
        ]
        keys = {resource_key(doc) for doc in bases}
        for path in patches:
            for patch in yaml_documents(path):
                assert resource_key(patch) in keys, f"{path.name} patches a missing resource"
        render(folder)


def test_the_base_has_what_production_needs() -> None:
    docs = render(K8S / "base")
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    deployments = by_kind["Deployment"]
    for service in ServiceName:
        deployment = deployments[service.value]
        (container,) = containers(deployment)
        assert service_of_command(container["command"]) is service
        port = DEFAULT_GRPC_PORTS[service]
        assert container["livenessProbe"]["grpc"]["port"] == port
        assert container["readinessProbe"]["grpc"]["port"] == port
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert service.value in by_kind["Service"]
        assert service.value in by_kind["PodDisruptionBudget"]
    (triton,) = containers(deployments["triton"])
    assert int(triton["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    for name in ("embedder", "indexer"):
        target = by_kind["HorizontalPodAutoscaler"][name]["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        # The autoscaler owns the count: a fixed one would fight it on every apply.
        assert "replicas" not in deployments[name]["spec"]
    for name in ("nats", "qdrant"):
        assert by_kind["StatefulSet"][name]["spec"]["replicas"] == 3
        assert name in by_kind["PodDisruptionBudget"]
    indexer = next(
        e for e in k8s_service_environments(docs, "base") if e.service.value == "indexer"
    )
    assert indexer.variables[f"{ENV_PREFIX}INDEXER_QDRANT_REPLICATION_FACTOR"] == "2"
    assert "enabled: true" in by_kind["ConfigMap"]["qdrant-config"]["data"]["production.yaml"]


# -- the services' environment ---------------------------------------------------------------


SOURCES = ["k8s/base", *(f"k8s/overlays/{overlay.name}" for overlay in OVERLAYS), "compose.yaml"]


def _environments(source: str) -> list[ServiceEnvironment]:
    """The vectorops containers of one deployment (rendered when it is an overlay)."""
    if source == "compose.yaml":
        return compose_service_environments(compose_file())
    return k8s_service_environments(render(DEPLOY / source), source)


@pytest.mark.parametrize("source", SOURCES)
def test_every_service_gets_an_environment(source: str) -> None:
    services = [environment.service for environment in _environments(source)]
    assert sorted(services) == sorted(ServiceName), f"{source}: {services}"


@pytest.mark.parametrize("source", SOURCES)
def test_every_variable_set_is_one_the_service_reads(source: str) -> None:
    for environment in _environments(source):
        unknown = set(environment.variables) - accepted_variables(environment.service)
        assert not unknown, f"{environment.where}: {environment.service.value} reads no {unknown}"
        missing = required_variables(environment.service) - set(environment.variables)
        assert not missing, f"{environment.where}: required and not set: {missing}"


@pytest.mark.parametrize("source", SOURCES)
def test_the_values_set_are_valid_settings(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for environment in _environments(source):
        with monkeypatch.context() as patch:
            for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
                patch.delenv(name)
            for name, value in {**dockerfile_env(), **environment.variables}.items():
                if name.startswith(ENV_PREFIX):
                    patch.setenv(name, value)
            try:
                settings = load_settings(environment.service, settings_type(environment.service))
            except ValidationError as error:
                pytest.fail(f"{environment.where}: {error}")
        # Reachable from other pods and containers, and connected to the shared engines.
        assert settings.grpc_host == "0.0.0.0"
        assert not settings.postgres_dsn.startswith("postgresql://postgres@127.0.0.1")
        assert "127.0.0.1" not in settings.nats_url
        assert settings.tokens(), f"{environment.where}: no bearer token would be accepted"
        assert settings.outbound_token(), f"{environment.where}: no token to call the others"


def test_the_image_sets_only_variables_the_services_read() -> None:
    every = set().union(*(accepted_variables(service) for service in ServiceName))
    names = {name for name in dockerfile_env() if name.startswith(ENV_PREFIX)}
    assert names, "the image sets no VECTOROPS_* variable (hosts must be 0.0.0.0)"
    assert names <= every, f"no service reads {names - every}"


# -- compose ---------------------------------------------------------------------------------


def test_compose_names_what_exists() -> None:
    compose = compose_file()
    services = compose["services"]
    volumes = set(compose.get("volumes") or {})
    assert {"postgres", "qdrant", "triton", "prometheus", "grafana"} <= set(services)
    assert {service_of_command(s.get("command")) for s in services.values()} >= set(ServiceName)
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name} has no image"
        if "build" in service:
            context = (COMPOSE.parent / service["build"]["context"]).resolve()
            assert context.is_dir(), f"{name}: no build context {context}"
            dockerfile = context / service["build"].get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: no {dockerfile}"
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for source in bind_sources(service):
            path = (COMPOSE.parent / source).resolve()
            assert path.exists(), f"{name} mounts {source}, which does not exist"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if source and not source.startswith((".", "/", "~")):
                assert source in volumes, f"{name}: volume {source} is not declared"


def test_compose_runs_a_jetstream_cluster_and_a_gpu_triton() -> None:
    services = compose_file()["services"]
    nats = [name for name, s in services.items() if "nats" in s.get("image", "")]
    assert len(nats) == 3
    config = (DEPLOY / "nats" / "nats.conf").read_text()
    assert "jetstream" in config and "store_dir" in config
    for name in nats:
        assert f"nats-route://{name}:6222" in config
    (device,) = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    # The production repository, with the ONNX graph its image's build exports.
    assert services["triton"]["build"]["dockerfile"] == "deploy/triton/production/Dockerfile"


def test_compose_needs_every_secret_the_example_gives() -> None:
    example = env_file(COMPOSE_ENV_EXAMPLE)
    for name in example:
        without = {key: value for key, value in example.items() if key != name}
        if f"${{{name}:?" in COMPOSE.read_text():
            with pytest.raises(KeyError, match=name):
                compose_file(without)


def test_compose_prometheus_config_is_valid() -> None:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed: `make test` installs it (apt prometheus)"
    done = subprocess.run(
        [binary, "check", "config", "--syntax-only", str(DEPLOY / "compose" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dockerfile_builds_every_service_from_one_image() -> None:
    text = DOCKERFILE.read_text()
    assert "constraints.txt" in text and "grpc_tools.protoc" in text
    assert "HF_HUB_OFFLINE=1" in text
    final_stage = text.rsplit("\nFROM ", 1)[-1]
    assert "\nUSER " in final_stage and "USER root" not in final_stage
    exposed = {
        int(port)
        for line in final_stage.splitlines()
        if line.startswith("EXPOSE")
        for port in line.split()[1:]
    }
    assert set(DEFAULT_GRPC_PORTS.values()) <= exposed
