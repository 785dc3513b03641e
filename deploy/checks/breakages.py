"""The broken copies the self-test feeds the checks: each one edit of a real rendered overlay or
of compose.yaml, named for the mistake it makes, with the check that must reject it.

Kept apart from the runner (self_test) so that adding a case is adding one row here. A case
names which check must catch it (schemas or invariants): a mistake caught by the wrong one would
mean the right one has a hole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .k8s_invariants import LIVE_SERVICE, k8s_errors
from .k8s_schemas import render_schema_errors
from .kubernetes import of_kind

Docs = list[dict[str, Any]]


def schemas(docs: Docs, flavour: str) -> list[str]:
    return render_schema_errors(docs)


def invariants(docs: Docs, flavour: str) -> list[str]:
    return k8s_errors(docs, flavour)


def _deployment(docs: Docs) -> dict[str, Any]:
    return of_kind(docs, "Deployment")[0]


def _container(docs: Docs) -> dict[str, Any]:
    return _deployment(docs)["spec"]["template"]["spec"]["containers"][0]


def _scaled(docs: Docs) -> dict[str, Any]:
    return of_kind(docs, "ScaledObject")[0]


def _set_toml(docs: Docs, edit: Callable[[str], str]) -> None:
    configmap = of_kind(docs, "ConfigMap")[0]
    configmap["data"]["lote.toml"] = edit(configmap["data"]["lote.toml"])


def _extra_kind(docs: Docs) -> None:
    docs.append(
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {},
        }
    )


def _http_liveness(docs: Docs) -> None:
    _container(docs)["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": 9464}}


def _root(docs: Docs) -> None:
    _deployment(docs)["spec"]["template"]["spec"]["securityContext"].update(
        runAsNonRoot=False, runAsUser=0
    )


def _no_gpu(docs: Docs) -> None:
    del _container(docs)["resources"]["limits"]["nvidia.com/gpu"]


def _drop_secret_key(docs: Docs) -> None:
    del of_kind(docs, "Secret")[0]["stringData"]["LOTE__STORE__URL"]


def _longer_shutdown(docs: Docs) -> None:
    _container(docs)["env"].append({"name": "LOTE__SERVER__SHUTDOWN_TIMEOUT", "value": "120s"})


# (what is wrong, the overlay to break, the edit, the check that must reject it)
K8S_CASES: list[tuple[str, str, Callable[[Docs], Any], Callable[[Docs, str], list[str]]]] = [
    (
        "Deployment with a misspelled field (imagePullPolicyy)",
        "cpu",
        lambda d: _container(d).update(imagePullPolicyy="Always"),
        schemas,
    ),
    (
        "Deployment with a probe port given as a string",
        "cpu",
        lambda d: _container(d)["readinessProbe"]["grpc"].update(port="50051"),
        schemas,
    ),
    (
        "ScaledObject missing scaleTargetRef",
        "cpu",
        lambda d: _scaled(d)["spec"].pop("scaleTargetRef"),
        schemas,
    ),
    (
        "ScaledObject with a misspelled field (maxReplicaCont)",
        "cpu",
        lambda d: _scaled(d)["spec"].update(maxReplicaCont=3),
        schemas,
    ),
    (
        "ScaledObject with a malformed metadata label",
        "cpu",
        lambda d: _scaled(d)["metadata"].update(labels={"app": 3}),
        schemas,
    ),
    (
        "TriggerAuthentication secretTargetRef without key",
        "cpu",
        lambda d: of_kind(d, "TriggerAuthentication")[0]["spec"]["secretTargetRef"][0].pop("key"),
        schemas,
    ),
    ("an object of a kind no schema covers", "cpu", _extra_kind, schemas),
    (
        "grace period too short (60 s for 5 s + 60 s)",
        "cpu",
        lambda d: _deployment(d)["spec"]["template"]["spec"].update(
            terminationGracePeriodSeconds=60
        ),
        invariants,
    ),
    (
        "an env variable raising shutdown_timeout past the grace period",
        "gpu",
        _longer_shutdown,
        invariants,
    ),
    ("liveness probe over HTTP", "cpu", _http_liveness, invariants),
    (
        "readiness probe on lote.v1.Models (ready before the models are)",
        "cpu",
        lambda d: _container(d)["readinessProbe"]["grpc"].update(service=LIVE_SERVICE),
        invariants,
    ),
    (
        "liveness probe on the overall status (restarts while loading)",
        "cpu",
        lambda d: _container(d)["livenessProbe"]["grpc"].update(service=""),
        invariants,
    ),
    ("pod running as root", "cpu", _root, invariants),
    (
        "writable root filesystem",
        "cpu",
        lambda d: _container(d)["securityContext"].update(readOnlyRootFilesystem=False),
        invariants,
    ),
    (
        "unknown settings key in the ConfigMap",
        "cpu",
        lambda d: _set_toml(d, lambda t: t.replace("[server]\n", "[server]\nprot = 1\n", 1)),
        invariants,
    ),
    (
        "unknown task in the ConfigMap",
        "cpu",
        lambda d: _set_toml(d, lambda t: t.replace('"feature-extraction"', '"embedding"')),
        invariants,
    ),
    (
        "KEDA queueName that is no model's queue",
        "cpu",
        lambda d: _scaled(d)["spec"]["triggers"][0]["metadata"].update(
            queueName="lote.documents.other"
        ),
        invariants,
    ),
    (
        "queue_prefix changed in the ConfigMap but not in KEDA",
        "gpu",
        lambda d: _set_toml(
            d, lambda t: t.replace('queue_prefix = "lote"', 'queue_prefix = "prod"')
        ),
        invariants,
    ),
    ("gpu overlay without nvidia.com/gpu", "gpu", _no_gpu, invariants),
    (
        "cpu overlay on a CUDA device",
        "cpu",
        lambda d: _container(d)["env"].append({"name": "LOTE__DEVICE__KIND", "value": "cuda:0"}),
        invariants,
    ),
    (
        "Service that is not headless",
        "cpu",
        lambda d: of_kind(d, "Service")[0]["spec"].pop("clusterIP"),
        invariants,
    ),
    ("Secret without a key the Deployment reads", "cpu", _drop_secret_key, invariants),
    (
        "Deployment setting replicas under KEDA",
        "cpu",
        lambda d: _deployment(d)["spec"].update(replicas=3),
        invariants,
    ),
]

# (what is wrong, the edit of compose.yaml); compose_errors must reject each.
COMPOSE_CASES: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    (
        "compose worker healthcheck without lote health",
        lambda d: d["services"]["worker-2"]["healthcheck"].update(
            test=["CMD", "curl", "-f", "http://127.0.0.1:9464/metrics"]
        ),
    ),
    (
        "compose with a misspelled service key (helthcheck)",
        lambda d: d["services"]["worker-1"].update(helthcheck={"test": ["CMD", "true"]}),
    ),
    ("compose with two workers", lambda d: d["services"].pop("worker-3")),
    (
        "compose settings file that does not exist",
        lambda d: d["services"]["worker-1"].update(
            volumes=[
                "./compose/missing.toml:/etc/lote/lote.toml:ro",
                "${LOTE_MODELS:-./models}:/models:ro",
            ]
        ),
    ),
    (
        "compose stop_grace_period shorter than the shutdown",
        lambda d: d["services"]["worker-3"].update(stop_grace_period="30s"),
    ),
    (
        "compose worker not waiting for a healthy postgres",
        lambda d: d["services"]["worker-1"]["depends_on"].pop("postgres"),
    ),
    (
        "compose workers publishing one host port",
        lambda d: d["services"]["worker-2"].update(ports=["127.0.0.1:50051:50051"]),
    ),
]
