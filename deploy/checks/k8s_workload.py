"""The worker as the rendered manifests define it: its Deployment, the lote container, and the
settings that container would start with.

The settings are not read from deploy/lote.toml but followed the way the kubelet and lote would:
the --config FILE argument, the volume it sits on, the ConfigMap key behind that volume, then the
container's LOTE__ variables on top (Secret values resolved in the same render). Anything lote
would refuse at start ends the Kubernetes invariants there, since the rest depends on it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .kubernetes import named, of_kind, secret_value
from .settings import apply_env, settings_errors


@dataclass
class Workload:
    """The one worker Deployment of a rendered overlay, and what its lote container runs with."""

    docs: list[dict[str, Any]]  # the whole render, for references to other objects
    deployment: dict[str, Any]
    name: str  # the Deployment's
    pod: dict[str, Any]  # the pod template's spec
    labels: dict[str, str]  # the pod template's
    annotations: dict[str, str]  # the pod template's
    container: dict[str, Any]  # the container named lote
    mounts: dict[str, dict[str, Any]]  # its volumeMounts by mountPath
    settings: dict[str, Any]  # its lote.toml with its LOTE__ variables applied
    origin: str  # where that lote.toml is: "ConfigMap/NAME KEY"

    @property
    def who(self) -> str:
        return f"Deployment/{self.name}"


def load_workload(docs: list[dict[str, Any]]) -> tuple[Workload | None, list[str]]:
    """The worker of one render, or None and why it cannot be checked further."""
    deployments = of_kind(docs, "Deployment")
    if len(deployments) != 1:
        return None, [f"expected one Deployment, found {len(deployments)}"]
    deployment = deployments[0]
    dname = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"].get("labels", {})
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    containers = [c for c in pod.get("containers", []) if c.get("name") == "lote"]
    if len(containers) != 1:
        return None, [f"Deployment/{dname}: no container named lote"]
    container = containers[0]

    found = _config_file(docs, dname, pod, container)
    if isinstance(found, list):
        return None, found
    origin, text = found
    try:
        settings = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        return None, [f"{origin}: not TOML: {error}"]
    env, errors = _container_env(docs, dname, container)
    errors += apply_env(settings, env, f"Deployment/{dname}")
    errors += settings_errors(settings, origin)
    if errors:
        return None, errors
    workload = Workload(
        docs=docs,
        deployment=deployment,
        name=dname,
        pod=pod,
        labels=labels,
        annotations=annotations,
        container=container,
        mounts=mounts_of(container),
        settings=settings,
        origin=origin,
    )
    return workload, []


def mounts_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's volumeMounts by mountPath."""
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def _config_file(
    docs: list[dict[str, Any]],
    dname: str,
    pod: dict[str, Any],
    container: dict[str, Any],
) -> tuple[str, str] | list[str]:
    """(origin, text) of the settings file the container's --config names, or the errors."""
    args = container.get("args", [])
    if "--config" not in args or args.index("--config") + 1 >= len(args):
        return [f"Deployment/{dname}: the container's args do not pass --config FILE"]
    config_path = args[args.index("--config") + 1]
    mounts = mounts_of(container)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    # The file is in a mounted ConfigMap directory, or is one key of it mounted with subPath.
    mount = mounts.get(config_path) if "subPath" in mounts.get(config_path, {}) else None
    file_name = mount["subPath"] if mount else Path(config_path).name
    mount = mount or mounts.get(str(Path(config_path).parent))
    source = volumes.get(mount["name"], {}).get("configMap") if mount else None
    if source is None:
        return [f"Deployment/{dname}: {config_path} is not on a ConfigMap volume"]
    key = next(
        (item["key"] for item in source.get("items", []) if item["path"] == file_name),
        None if source.get("items") else file_name,
    )
    configmaps = named(docs, "ConfigMap", source.get("name"))
    if not configmaps or key not in (configmaps[0].get("data") or {}):
        return [f"Deployment/{dname}: ConfigMap {source.get('name')} with key {key} is missing"]
    return f"ConfigMap/{source['name']} {key}", configmaps[0]["data"][key]


def _container_env(
    docs: list[dict[str, Any]], dname: str, container: dict[str, Any]
) -> tuple[dict[str, str], list[str]]:
    """The container's variables with their values where the render holds them, and the Secret
    references that resolve to nothing."""
    errors = []
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            value = secret_value(docs, ref["name"], ref["key"])
            if value is None and not ref.get("optional"):
                errors.append(
                    f"Deployment/{dname}: env {var['name']} reads Secret {ref['name']} key "
                    f"{ref['key']}, which the overlay does not define"
                )
            elif value is not None:
                env[var["name"]] = value
        elif var["name"].startswith("LOTE__"):
            env[var["name"]] = "(from the pod)"
    return env, errors
