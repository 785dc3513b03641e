"""lote's own rules for a rendered overlay, the ones no schema can know: what makes a valid
Deployment a working lote worker.

k8s_errors runs them in a fixed order and is what the checks and the self-test call. The rules on
the pod live here (stopping in time, reachable ports, probes on the right health services,
non-root and read-only, models on read-only mounts, shared job state); the rules on the objects
around it (Service, PodDisruptionBudget, KEDA, the cpu/gpu flavour) live in k8s_scaling.
"""

from __future__ import annotations

from typing import Any

from .k8s_scaling import scaling_errors, selection_errors
from .k8s_workload import Workload, load_workload
from .kubernetes import named
from .settings import ALL_INTERFACES, addr_port, amqp_enabled, effective, stop_budget

# What lote's health services are (src/server.rs): "" and lote.v1.Worker turn SERVING once every
# model is loaded; lote.v1.Models is SERVING from the start until shutdown.
READY_SERVICES = {"", "lote.v1.Worker"}
LIVE_SERVICE = "lote.v1.Models"


def k8s_errors(docs: list[dict[str, Any]], flavour: str) -> list[str]:
    """lote's invariants on one rendered overlay; `flavour` is the overlay's name (gpu or not)."""
    workload, errors = load_workload(docs)
    if workload is None:
        return errors
    errors = shutdown_errors(workload)
    host, grpc_port = addr_port(
        effective(workload.settings, "server", "grpc_addr"), "server.grpc_addr"
    )
    errors += address_errors(workload, host, grpc_port)
    errors += probe_errors(workload, grpc_port)
    errors += security_errors(workload)
    errors += model_mount_errors(workload)
    errors += shared_state_errors(workload)
    errors += selection_errors(workload, grpc_port)
    errors += scaling_errors(workload, flavour)
    return errors


def shutdown_errors(w: Workload) -> list[str]:
    """The grace period covers the drain and the longest batch."""
    budget, what = stop_budget(w.settings, w.origin)
    grace = w.pod.get("terminationGracePeriodSeconds", 30)
    if not grace > budget:
        return [
            f"{w.who}: terminationGracePeriodSeconds {grace} must exceed {what} "
            f"(= {budget:g} s), or in-flight batches are killed"
        ]
    return []


def address_errors(w: Workload, host: str, grpc_port: int) -> list[str]:
    """Reachable from the kubelet and Prometheus, on the ports the pod declares."""
    errors = []
    if host not in ALL_INTERFACES:
        errors.append(f"{w.origin}: server.grpc_addr listens on {host}, not reachable by probes")
    ports = {p.get("containerPort") for p in w.container.get("ports", [])}
    if grpc_port not in ports:
        errors.append(f"{w.who}: gRPC port {grpc_port} is not a containerPort")
    metrics = effective(w.settings, "server", "metrics_addr")
    if metrics:
        mhost, mport = addr_port(metrics, "server.metrics_addr")
        if mhost not in ALL_INTERFACES:
            errors.append(f"{w.origin}: server.metrics_addr listens on {mhost}")
        if w.annotations.get("prometheus.io/scrape") != "true":
            errors.append(f'{w.who}: pod template lacks prometheus.io/scrape: "true"')
        if w.annotations.get("prometheus.io/port") != str(mport):
            errors.append(
                f"{w.who}: prometheus.io/port is "
                f"{w.annotations.get('prometheus.io/port')!r}, metrics listen on {mport}"
            )
        if w.annotations.get("prometheus.io/path", "/metrics") != "/metrics":
            errors.append(f"{w.who}: prometheus.io/path must be /metrics")
    return errors


def probe_errors(w: Workload, grpc_port: int) -> list[str]:
    """Native gRPC health checks on lote's services: liveness on the one that is SERVING while
    the models load, readiness on those that wait for them."""
    errors = []
    for probe, services in [
        ("startupProbe", {LIVE_SERVICE} | READY_SERVICES),
        ("livenessProbe", {LIVE_SERVICE}),
        ("readinessProbe", READY_SERVICES),
    ]:
        spec = w.container.get(probe)
        if not spec:
            errors.append(f"{w.who}: no {probe}")
            continue
        handlers = [h for h in ("grpc", "httpGet", "tcpSocket", "exec") if h in spec]
        if handlers != ["grpc"]:
            errors.append(f"{w.who}: {probe} must be a grpc probe, not {handlers}")
            continue
        if spec["grpc"].get("port") != grpc_port:
            errors.append(
                f"{w.who}: {probe} probes port {spec['grpc'].get('port')}, "
                f"lote serves gRPC on {grpc_port}"
            )
        service = spec["grpc"].get("service") or ""
        if service not in services:
            errors.append(
                f"{w.who}: {probe} asks health service {service!r}; expected one of "
                f"{sorted(services)}"
            )
    return errors


def security_errors(w: Workload) -> list[str]:
    """Non-root, read-only, no privileges, no service account token."""
    errors = []
    pod_sc, sc = w.pod.get("securityContext", {}), w.container.get("securityContext", {})
    if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
        errors.append(f"{w.who}: runAsNonRoot is not true")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
        errors.append(f"{w.who}: runs as UID 0")
    if sc.get("readOnlyRootFilesystem") is not True:
        errors.append(f"{w.who}: readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        errors.append(f"{w.who}: allowPrivilegeEscalation is not false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        errors.append(f"{w.who}: capabilities do not drop ALL")
    seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
    if seccomp.get("type") != "RuntimeDefault":
        errors.append(f"{w.who}: seccompProfile is not RuntimeDefault")
    accounts = named(w.docs, "ServiceAccount", w.pod.get("serviceAccountName"))
    automount = w.pod.get(
        "automountServiceAccountToken",
        accounts[0].get("automountServiceAccountToken") if accounts else None,
    )
    if automount is not False:
        errors.append(f"{w.who}: the service account token is mounted")
    return errors


def model_mount_errors(w: Workload) -> list[str]:
    """Every model path inside a read-only mount."""
    errors = []
    for model in w.settings.get("models", []):
        inside = [m for p, m in w.mounts.items() if model["path"].startswith(p.rstrip("/") + "/")]
        if not inside:
            errors.append(f"{w.origin}: model {model['name']} path {model['path']} is on no mount")
        elif not inside[0].get("readOnly"):
            errors.append(f"{w.who}: {inside[0]['mountPath']} is not read-only")
    return errors


def shared_state_errors(w: Workload) -> list[str]:
    """A cluster shares job state and documents: PostgreSQL and RabbitMQ, not SQLite."""
    errors = []
    store = str(effective(w.settings, "store", "url"))
    if not store.startswith(("postgres://", "postgresql://")):
        errors.append(
            f"{w.who}: store.url {store!r} is not postgres:// (workers "
            "would each keep their own jobs)"
        )
    if not amqp_enabled(w.settings):
        errors.append(f"{w.origin}: amqp.enabled is not true (workers would not share documents)")
    return errors
