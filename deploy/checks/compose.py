"""deploy/compose.yaml: the Compose Specification, then what makes it a working lote cluster.

The schema catches misspelled keys that docker compose would reject or ignore; the invariants
catch the file that starts fine and then does the wrong thing: three workers whose healthchecks
run `lote health`, whose settings file exists and is one lote accepts (with the service's LOTE__
variables applied), whose stop_grace_period outlasts drain + shutdown, that publish distinct host
ports, share PostgreSQL and RabbitMQ, wait for them to be healthy, and that Prometheus scrapes.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .common import ROOT, SCHEMAS, json_path
from .settings import (
    ALL_INTERFACES,
    addr_port,
    amqp_enabled,
    apply_env,
    effective,
    seconds,
    settings_errors,
    stop_budget,
)

COMPOSE_SCHEMA = "compose-spec.json"


def load_compose(path: Path) -> dict[str, Any]:
    """compose.yaml as plain data: YAML anchors and merge keys (<<: *worker) resolved into
    copies, so that editing one service (the self-test does) leaves the others alone."""
    return json.loads(json.dumps(yaml.safe_load(path.read_text())))


def compose_schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads((SCHEMAS / COMPOSE_SCHEMA).read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{json_path(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def _compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: str(v) for k, v in env.items()}


def _volume(entry: Any) -> tuple[str, str, bool]:
    """(source, target, read-only) of a volume entry, short ("SRC:DST[:ro]") or long syntax."""
    if isinstance(entry, dict):
        return (
            str(entry.get("source", "")),
            str(entry.get("target", "")),
            bool(entry.get("read_only")),
        )
    # The source may hold an interpolation with a colon in it: ${LOTE_MODELS:-./models}.
    match = re.fullmatch(r"((?:\$\{[^}]*\}|[^:])*):([^:]+)(?::([^:]*))?", str(entry))
    if match is None:
        return "", str(entry), False
    return match.group(1), match.group(2), "ro" in (match.group(3) or "").split(",")


def compose_errors(doc: dict[str, Any], base: Path) -> list[str]:
    """The Compose Specification, then lote's own invariants; `base` is the file's directory."""
    errors = compose_schema_errors(doc)
    if errors:
        return errors
    services = doc.get("services", {})
    workers = {
        name: s
        for name, s in services.items()
        if "Dockerfile" in str((s.get("build") or {}).get("dockerfile", ""))
        or str(s.get("image", "")).startswith("lote")
    }
    if sorted(workers) != ["worker-1", "worker-2", "worker-3"]:
        errors.append(f"expected the three workers worker-1..3, found {sorted(workers)}")
    host_ports: list[str] = []
    for name, worker in sorted(workers.items()):
        errors += _worker_errors(name, worker, services, base, host_ports)
    if len(set(host_ports)) != len(host_ports):
        errors.append(f"workers publish the same host port: {host_ports}")
    return errors


def _worker_errors(
    name: str,
    worker: dict[str, Any],
    services: dict[str, Any],
    base: Path,
    host_ports: list[str],
) -> list[str]:
    """One worker service's invariants; the host ports it publishes are added to `host_ports`."""
    errors = []
    test = worker.get("healthcheck", {}).get("test", [])
    command = " ".join(test[1:]) if isinstance(test, list) else str(test)
    if not re.search(r"(^|/)lote health --addr http://127\.0\.0\.1:\d+", command):
        errors.append(f"{name}: healthcheck {command!r} is not `lote health --addr ...`")
    volumes = [_volume(v) for v in worker.get("volumes", [])]
    configs = [v for v in volumes if v[1] == "/etc/lote/lote.toml"]
    if not configs:
        errors.append(f"{name}: nothing is mounted at /etc/lote/lote.toml")
        return errors
    path = (base / configs[0][0]).resolve()
    if not path.is_file():
        errors.append(f"{name}: settings file {configs[0][0]} does not exist ({path})")
        return errors
    if not any(target == "/models" and read_only for _, target, read_only in volumes):
        errors.append(f"{name}: models are not mounted read-only at /models")
    origin = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    settings = tomllib.loads(path.read_text())
    problems = apply_env(settings, _compose_env(worker), f"{name}'s environment")
    problems += settings_errors(settings, origin)
    if problems:
        return errors + problems
    budget, what = stop_budget(settings, origin)
    grace = seconds(worker.get("stop_grace_period", "10s"), f"{name}: stop_grace_period")
    if not grace > budget:
        errors.append(
            f"{name}: stop_grace_period {worker.get('stop_grace_period', '10s')} "
            f"must exceed {what} (= {budget:g} s)"
        )
    host, port = addr_port(effective(settings, "server", "grpc_addr"), "server.grpc_addr")
    if host not in ALL_INTERFACES:
        errors.append(f"{origin}: server.grpc_addr listens on {host}, unreachable by ports")
    for mapping in worker.get("ports", []):
        if isinstance(mapping, dict):
            published, target = str(mapping.get("published", "")), str(mapping.get("target"))
        else:  # [HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL]
            pieces = str(mapping).split("/")[0].split(":")
            published, target = (pieces[-2] if len(pieces) > 1 else ""), pieces[-1]
        if target != str(port):
            errors.append(f"{name}: port {mapping} does not reach gRPC port {port}")
        host_ports.append(published)
    for model in settings.get("models", []):
        if not model["path"].startswith("/models/"):
            errors.append(f"{origin}: model {model['name']} is not under /models")
    if not amqp_enabled(settings):
        errors.append(f"{name}: amqp.enabled is not true")
    if not str(effective(settings, "store", "url")).startswith("postgres://"):
        errors.append(f"{name}: store.url is not postgres://")
    depends = worker.get("depends_on", {})
    for needed in ("rabbitmq", "postgres"):
        if not isinstance(depends, dict) or (
            depends.get(needed, {}).get("condition") != "service_healthy"
        ):
            errors.append(f"{name}: does not wait for {needed} (condition: service_healthy)")
        elif not services.get(needed, {}).get("healthcheck"):
            errors.append(f"{needed}: has no healthcheck for {name} to wait on")
    metrics = effective(settings, "server", "metrics_addr")
    if metrics:
        targets = _prometheus_targets(services, base)
        if f"{name}:{addr_port(metrics, 'server.metrics_addr')[1]}" not in targets:
            errors.append(f"prometheus does not scrape {name}'s metrics")
    return errors


def _prometheus_targets(services: dict[str, Any], base: Path) -> set[str]:
    for service in services.values():
        for entry in service.get("volumes", []):
            source, target, _ = _volume(entry)
            if target == "/etc/prometheus/prometheus.yml" and (base / source).is_file():
                config = yaml.safe_load((base / source).read_text())
                return {
                    target
                    for job in config.get("scrape_configs", [])
                    for static in job.get("static_configs", [])
                    for target in static.get("targets", [])
                }
    return set()
