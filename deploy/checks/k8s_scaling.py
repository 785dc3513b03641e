"""The objects around the worker pod, checked against it: what selects the workers, what scales
them, and whether the overlay asks for the hardware its image and settings expect.

These are the references kubectl never resolves for us: a Service or PodDisruptionBudget whose
selector misses the pods, a KEDA trigger on a queue no model consumes (lote's queues are
"{amqp.queue_prefix}.documents.{model}"), a TriggerAuthentication or Secret key absent from the
overlay, a gpu overlay without nvidia.com/gpu. Each would apply cleanly and then quietly not work.
"""

from __future__ import annotations

from typing import Any

from .k8s_workload import Workload
from .kubernetes import matches, of_kind, secret_value
from .settings import effective


def selection_errors(w: Workload, grpc_port: int) -> list[str]:
    """A headless Service and a PodDisruptionBudget select the workers."""
    errors = []
    services = of_kind(w.docs, "Service")
    if not any(matches(s["spec"].get("selector", {}), w.labels) for s in services):
        errors.append("no Service selects the worker pods")
    for service in services:
        if service["spec"].get("clusterIP") != "None":
            errors.append(
                f"Service/{service['metadata']['name']}: not headless (clusterIP: None),"
                " so gRPC clients could not balance calls over the workers"
            )
        if not any(p.get("port") == grpc_port for p in service["spec"].get("ports", [])):
            errors.append(f"Service/{service['metadata']['name']}: no port {grpc_port}")
    pdbs = of_kind(w.docs, "PodDisruptionBudget")
    if not any(
        matches(p["spec"].get("selector", {}).get("matchLabels", {}), w.labels) for p in pdbs
    ):
        errors.append("no PodDisruptionBudget selects the worker pods")
    return errors


def scaling_errors(w: Workload, flavour: str) -> list[str]:
    """KEDA owns the replica count through one ScaledObject on this Deployment; then its
    triggers, and the flavour (which needs that ScaledObject for the gpu overlay's bound)."""
    errors = []
    if "replicas" in w.deployment["spec"]:
        errors.append(f"{w.who}: sets replicas, which KEDA's HPA owns")
    scaled = [
        s
        for s in of_kind(w.docs, "ScaledObject")
        if s["spec"].get("scaleTargetRef", {}).get("name") == w.name
        and s["spec"].get("scaleTargetRef", {}).get("kind", "Deployment") == "Deployment"
    ]
    if len(scaled) != 1:
        errors.append(f"expected one ScaledObject scaling {w.who}, found {len(scaled)}")
        return errors
    errors += trigger_errors(w, scaled[0])
    errors += flavour_errors(w, scaled[0], flavour)
    return errors


def trigger_errors(w: Workload, so: dict[str, Any]) -> list[str]:
    """One rabbitmq trigger per model queue, with working credentials."""
    errors = []
    who = f"ScaledObject/{so['metadata']['name']}"
    prefix = effective(w.settings, "amqp", "queue_prefix")
    expected = {f"{prefix}.documents.{m['name']}" for m in w.settings.get("models", [])}
    queues = set()
    auths = {a["metadata"]["name"]: a for a in of_kind(w.docs, "TriggerAuthentication")}
    for trigger in so["spec"].get("triggers", []):
        if trigger.get("type") != "rabbitmq":
            continue
        queue = trigger.get("metadata", {}).get("queueName")
        queues.add(queue)
        if queue not in expected:
            errors.append(
                f"{who}: queueName {queue!r} is no model's queue; lote consumes {sorted(expected)}"
            )
        if trigger.get("metadata", {}).get("mode") not in ("QueueLength", "MessageRate"):
            errors.append(f"{who}: trigger mode is not set")
        auth_name = trigger.get("authenticationRef", {}).get("name")
        auth = auths.get(auth_name)
        if auth is None:
            errors.append(f"{who}: TriggerAuthentication {auth_name!r} is not in the overlay")
            continue
        refs = auth["spec"].get("secretTargetRef", [])
        if "host" not in [r.get("parameter") for r in refs] + list(trigger["metadata"]):
            errors.append(f"TriggerAuthentication/{auth_name}: gives the scaler no host")
        for ref in refs:
            if secret_value(w.docs, ref["name"], ref["key"]) is None:
                errors.append(
                    f"TriggerAuthentication/{auth_name}: Secret {ref['name']} key "
                    f"{ref['key']} is not in the overlay"
                )
    for queue in sorted(expected - queues):
        errors.append(f"{who}: no rabbitmq trigger on {queue}")
    low, high = so["spec"].get("minReplicaCount", 0), so["spec"].get("maxReplicaCount", 100)
    if low > high:
        errors.append(f"{who}: minReplicaCount > maxReplicaCount")
    return errors


def flavour_errors(w: Workload, so: dict[str, Any], flavour: str) -> list[str]:
    """The gpu overlay runs on a GPU, the others do not ask for one."""
    errors = []
    limits = w.container.get("resources", {}).get("limits", {})
    gpus = int(str(limits.get("nvidia.com/gpu", 0)))
    kind = str(effective(w.settings, "device", "kind"))
    image = w.container.get("image", "")
    if flavour == "gpu":
        if gpus < 1:
            errors.append(f"{w.who}: the gpu overlay asks for no nvidia.com/gpu")
        if not kind.startswith("cuda:"):
            errors.append(f"{w.who}: device.kind is {kind!r}, not cuda:N")
        if "cuda" not in image:
            errors.append(f"{w.who}: image {image!r} is not the CUDA image")
        if "maxReplicaCount" not in so["spec"]:
            errors.append(
                f"ScaledObject/{so['metadata']['name']}: set maxReplicaCount to the number of GPUs"
            )
    else:
        if gpus:
            errors.append(f"{w.who}: the {flavour} overlay asks for a GPU")
        if kind.startswith("cuda"):
            errors.append(f"{w.who}: device.kind {kind!r} in the {flavour} overlay")
        if "cuda" in image:
            errors.append(f"{w.who}: the {flavour} overlay runs image {image!r}")
    return errors
