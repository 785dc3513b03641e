"""Every rendered object against the schema the API server would hold it to, strictly.

Built-in kinds go to kubernetes-validate (Kubernetes' own OpenAPI schemas, unknown fields are
errors); KEDA's kinds go to the CRD schemas vendored in deploy/schemas, turned into JSON Schema
that rejects unknown fields where `kubectl apply --validate=strict` would. A kind neither covers
is an error rather than a silent pass: an object nobody checked is not a checked object.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml
from referencing import Registry, Resource

from .common import SCHEMAS, json_path
from .kubernetes import name_of

# The one Kubernetes version every built-in kind is validated against: the newest that the pinned
# kubernetes-validate (scripts/requirements.txt) ships.
K8S_VERSION = "1.37.0"

KEDA_CRDS = ["keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml"]


def _strict(node: Any) -> Any:
    """An OpenAPI v3 structural schema (a CRD's) as JSON Schema, with unknown fields rejected
    wherever the API server would prune or, with strict field validation, refuse them."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if node.get("nullable") and isinstance(node.get("type"), str):
        out["type"] = [node["type"], "null"]
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_validators() -> dict[tuple[str, str], Any]:
    """A validator per (apiVersion, kind) served by the vendored CRDs."""
    validators = {}
    for name in KEDA_CRDS:
        crd = yaml.safe_load((SCHEMAS / name).read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = _strict(version["schema"]["openAPIV3Schema"])
                key = (f"{group}/{version['name']}", kind)
                validators[key] = jsonschema.Draft202012Validator(schema)
    return validators


@cache
def object_meta_validator() -> Any:
    """Kubernetes' ObjectMeta schema, for the metadata of custom resources."""
    definitions = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{K8S_VERSION}-local-strict/_definitions.json", K8S_VERSION
    )
    registry = Resource.from_contents(definitions) @ Registry()
    ref = definitions["$id"] + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    return jsonschema.Draft202012Validator({"$ref": ref}, registry=registry)


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """One rendered object against its schema: Kubernetes' built-in kinds, or a vendored CRD."""
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if not kind or not api_version:
        return [f"{name_of(doc)}: no kind or apiVersion"]
    validator = crd_validators().get((api_version, kind))
    if validator is not None:
        errors = [
            f"{name_of(doc)}: {json_path(e.absolute_path)}: {e.message}"
            for e in validator.iter_errors(doc)
        ]
        errors += [
            f"{name_of(doc)}: metadata.{json_path(e.absolute_path)}: {e.message}"
            for e in object_meta_validator().iter_errors(doc.get("metadata") or {})
        ]
        return errors
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{name_of(doc)}: {json_path(error.path)}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [
            f"{name_of(doc)}: no schema for {api_version} {kind}, neither Kubernetes "
            f"{K8S_VERSION}'s nor one in deploy/schemas, so it cannot be checked"
        ]
    return []


def render_schema_errors(docs: list[dict[str, Any]]) -> list[str]:
    """schema_errors of every object of one rendered overlay."""
    return [error for doc in docs for error in schema_errors(doc)]
