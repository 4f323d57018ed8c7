"""What deploy/ asks of the services, read from its files: the Kubernetes manifests
(base and overlays, with the overlays' patches and image changes applied as
kustomize does for the simple cases they use), the compose file with its
variables filled in from the example env file, the image's ENV, and the
environment each vectorops container gets. Shared by the tests of deploy/."""

from __future__ import annotations

import copy
import importlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kit.config import ENV_PREFIX, ServiceName, Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_ENV_EXAMPLE = DEPLOY / "compose.env.example"
DOCKERFILE = DEPLOY / "Dockerfile"
KUSTOMIZATION = "kustomization.yaml"

# Kinds that live outside any namespace (the rest get the kustomization's).
_CLUSTER_KINDS = {"Namespace"}


# -- the services' settings ------------------------------------------------------------------


def settings_type(service: ServiceName) -> type[Settings]:
    """The settings class the service's process loads (its ServiceSpec's)."""
    module = importlib.import_module(f"{service.value}.server")
    return module.SPEC.settings_type


def accepted_variables(service: ServiceName) -> set[str]:
    """Every VECTOROPS_* variable the service reads."""
    return {f"{ENV_PREFIX}{name}".upper() for name in settings_type(service).model_fields}


def required_variables(service: ServiceName) -> set[str]:
    """Settings without a default (``service`` is set by the process itself)."""
    return {
        f"{ENV_PREFIX}{name}".upper()
        for name, field in settings_type(service).model_fields.items()
        if field.is_required() and name != "service"
    }


def service_of_command(command: Any) -> ServiceName | None:
    """``python -m <service>`` → the service; anything else → None."""
    if isinstance(command, str):
        command = command.split()
    if not isinstance(command, list) or len(command) != 3 or command[:2] != ["python", "-m"]:
        return None
    try:
        return ServiceName(command[2])
    except ValueError:
        return None


@dataclass(frozen=True)
class ServiceEnvironment:
    """The environment one vectorops container or compose service gets."""

    where: str  # for messages: file and workload
    service: ServiceName
    variables: dict[str, str]  # VECTOROPS_* name → value


# -- Kubernetes ------------------------------------------------------------------------------


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest under deploy/k8s (kustomizations aside)."""
    return sorted(path for path in K8S.rglob("*.yaml") if path.name != KUSTOMIZATION)


def kustomization_dirs() -> list[Path]:
    return sorted(path.parent for path in K8S.rglob(KUSTOMIZATION))


def kustomization(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / KUSTOMIZATION).read_text())


def patch_paths(spec: Mapping[str, Any]) -> list[str]:
    """Paths of a kustomization's patches (``patches: [{path}]`` and the older
    ``patchesStrategicMerge: [path]``)."""
    paths = [entry["path"] for entry in spec.get("patches", []) if "path" in entry]
    return paths + list(spec.get("patchesStrategicMerge", []))


def resource_key(doc: Mapping[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def render(folder: Path) -> list[dict[str, Any]]:
    """The kustomization's output for what it uses: resources (files and folders
    with their own kustomization), strategic-merge patches by kind and name,
    image changes and the namespace. Anything else fails: extend this first."""
    spec = kustomization(folder)
    unsupported = set(spec) - {
        "apiVersion",
        "kind",
        "namespace",
        "labels",
        "resources",
        "patches",
        "images",
    }
    if unsupported:
        raise NotImplementedError(f"{folder / KUSTOMIZATION}: {sorted(unsupported)}")
    docs: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        target = (folder / entry).resolve()
        docs += render(target) if target.is_dir() else yaml_documents(target)
    by_key = {resource_key(doc): doc for doc in docs}
    for path in patch_paths(spec):
        for patch in yaml_documents(folder / path):
            key = resource_key(patch)
            if key not in by_key:
                raise KeyError(f"{folder / path}: patches {key}, which is not a resource")
            merged = strategic_merge(by_key[key], patch)
            docs[docs.index(by_key[key])] = by_key[key] = merged
    for image in spec.get("images", []):
        for doc in docs:
            for container in containers(doc):
                container["image"] = changed_image(container["image"], image)
    if "namespace" in spec:
        for doc in docs:
            if doc["kind"] not in _CLUSTER_KINDS:
                doc["metadata"]["namespace"] = spec["namespace"]
    for label in spec.get("labels", []):
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(label["pairs"])
    return docs


def strategic_merge(base: Any, patch: Any) -> Any:
    """A strategic-merge patch as the overlays use it: maps merge, lists of named
    items (containers, env, volumes, ports) merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(key.startswith("$") for key in patch):
            raise NotImplementedError(f"patch directives: {sorted(patch)}")
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        merged_items = {item["name"]: copy.deepcopy(item) for item in base}
        for item in patch:
            name = item["name"]
            merged_items[name] = (
                strategic_merge(merged_items[name], item) if name in merged_items else item
            )
        return list(merged_items.values())
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(item, dict) and "name" in item for item in items)


def pod_spec(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def containers(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    if spec is None:
        return []
    return spec.get("initContainers", []) + spec.get("containers", [])


def changed_image(reference: str, change: Mapping[str, str]) -> str:
    """kustomize's ``images`` entry applied to one image reference."""
    name, tag = reference, ""
    if ":" in reference.rsplit("/", 1)[-1]:
        name, tag = reference.rsplit(":", 1)
    if name != change["name"]:
        return reference
    name = change.get("newName", name)
    tag = change.get("newTag", tag)
    return f"{name}:{tag}" if tag else name


def k8s_service_environments(docs: list[dict[str, Any]], where: str) -> list[ServiceEnvironment]:
    """Each vectorops container's VECTOROPS_* environment: its ConfigMaps (envFrom),
    then its own env, secret references resolved from the Secrets in ``docs``."""
    config_maps = {
        d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"
    }
    secrets = {
        d["metadata"]["name"]: d.get("stringData", {}) for d in docs if d["kind"] == "Secret"
    }
    found = []
    for doc in docs:
        for container in containers(doc):
            service = service_of_command(container.get("command"))
            if service is None:
                continue
            variables: dict[str, str] = {}
            for source in container.get("envFrom", []):
                name = source["configMapRef"]["name"]
                variables.update(config_maps[name])
            for entry in container.get("env", []):
                if "value" in entry:
                    variables[entry["name"]] = str(entry["value"])
                else:
                    ref = entry["valueFrom"]["secretKeyRef"]
                    variables[entry["name"]] = secrets[ref["name"]][ref["key"]]
            found.append(
                ServiceEnvironment(
                    where=f"{where}: {doc['kind']}/{doc['metadata']['name']}",
                    service=service,
                    variables={k: v for k, v in variables.items() if k.startswith(ENV_PREFIX)},
                )
            )
    return found


# -- compose ---------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$\$")


def env_file(path: Path) -> dict[str, str]:
    """A compose .env file: NAME=value lines, values optionally quoted."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def interpolate(value: Any, variables: Mapping[str, str]) -> Any:
    """Compose's ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}`` in every string."""
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        if variables.get(name):
            return variables[name]
        if op and op.endswith("?"):
            raise KeyError(f"${{{name}}} is required ({arg}) and not set")
        return arg or ""

    return _INTERPOLATION.sub(substitute, value)


def compose_file(variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """deploy/compose.yaml with its variables filled in (default: the example env file)."""
    raw = yaml.safe_load(COMPOSE.read_text())
    return interpolate(raw, env_file(COMPOSE_ENV_EXAMPLE) if variables is None else variables)


def compose_service_environments(compose: Mapping[str, Any]) -> list[ServiceEnvironment]:
    found = []
    for name, service in compose["services"].items():
        vectorops_service = service_of_command(service.get("command"))
        if vectorops_service is None:
            continue
        environment = service.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        found.append(
            ServiceEnvironment(
                where=f"compose.yaml: {name}",
                service=vectorops_service,
                variables={k: str(v) for k, v in environment.items() if k.startswith(ENV_PREFIX)},
            )
        )
    return found


def bind_sources(service: Mapping[str, Any]) -> Iterator[str]:
    """Host paths of a compose service's bind mounts (short and long syntax)."""
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                yield volume["source"]
            continue
        source = volume.split(":", 1)[0]
        if source.startswith((".", "/", "~")):
            yield source


# -- the image -------------------------------------------------------------------------------


def dockerfile_env(path: Path = DOCKERFILE) -> dict[str, str]:
    """The ``ENV NAME=value ...`` settings of the image's final stage."""
    text = path.read_text().replace("\\\n", " ")
    final_stage = re.split(r"^FROM\s", text, flags=re.MULTILINE)[-1]
    values = {}
    for line in final_stage.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                name, _, value = pair.partition("=")
                values[name] = value
    return values
