"""cluster/k8s/rayjob.yaml against KubeRay's RayJob schema.

No package on the registries carries KubeRay's CRDs, and the tests run offline, so the
fields a RayJob has are written down here from the CRD's OpenAPI schema: KubeRay v1.7.0,
``ray-operator/config/crd/bases/ray.io_rayjobs.yaml``, version ``v1`` (served and stored).
Each table lists the fields of one object with their OpenAPI types; ``REQUIRED`` the
fields the schema requires; ``STRING_MAPS`` the objects whose values must be strings
(``additionalProperties: {type: string}``), where an unquoted ``true`` or ``8`` in YAML is
refused by the API server. Pod templates are Kubernetes' own ``PodTemplateSpec``; the
container fields the manifest uses are checked against ``CONTAINER``, from the Kubernetes
API reference (core/v1 Container).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

RAYJOB_SPEC = {
    "activeDeadlineSeconds": int, "backoffLimit": int, "clusterSelector": dict,
    "deletionStrategy": dict, "entrypoint": str, "entrypointNumCpus": (int, float),
    "entrypointNumGpus": (int, float), "entrypointResources": str, "jobId": str,
    "managedBy": str, "metadata": dict, "preRunningDeadlineSeconds": int,
    "rayClusterSpec": dict, "runtimeEnvYAML": str, "shutdownAfterJobFinishes": bool,
    "submissionMode": str, "submitterConfig": dict, "submitterPodTemplate": dict,
    "suspend": bool, "ttlSecondsAfterFinished": int,
}  # fmt: skip
RAYCLUSTER_SPEC = {
    "authOptions": dict, "autoscalerOptions": dict, "enableInTreeAutoscaling": bool,
    "gcsFaultToleranceOptions": dict, "headGroupSpec": dict, "headServiceAnnotations": dict,
    "historyServerOptions": dict, "managedBy": str, "networkPolicy": dict, "rayVersion": str,
    "suspend": bool, "tlsOptions": dict, "upgradeStrategy": dict, "workerGroupSpecs": list,
}  # fmt: skip
HEAD_GROUP = {
    "enableIngress": bool, "headService": dict, "ingressOptions": dict, "labels": dict,
    "rayStartParams": dict, "resources": dict, "serviceType": str, "template": dict,
}  # fmt: skip
WORKER_GROUP = {
    "groupName": str, "idleTimeoutSeconds": int, "labels": dict, "maxReplicas": int,
    "minReplicas": int, "numOfHosts": int, "priority": int, "rayStartParams": dict,
    "replicas": int, "resources": dict, "scaleStrategy": dict, "suspend": bool,
    "template": dict,
}  # fmt: skip
REQUIRED = {
    "rayClusterSpec": {"headGroupSpec"},
    "headGroupSpec": {"template"},
    "workerGroupSpec": {"groupName", "maxReplicas", "minReplicas", "template"},
}
STRING_MAPS = ("rayStartParams", "labels", "resources")
CONTAINER = {
    "name": str, "image": str, "command": list, "args": list, "env": list, "envFrom": list,
    "resources": dict, "ports": list, "volumeMounts": list, "imagePullPolicy": str,
}  # fmt: skip
"""The core/v1 Container fields this project's manifests may use (a subset)."""


def _fields(obj: dict[str, Any], table: dict[str, Any], where: str) -> list[str]:
    """Unknown fields and wrong types of ``obj``, as messages naming ``where``."""
    out = []
    for key, value in obj.items():
        if key not in table:
            out.append(f"{where}.{key}: not a field of KubeRay's RayJob v1")
        elif not isinstance(value, table[key]) or (table[key] is int and isinstance(value, bool)):
            out.append(f"{where}.{key}: {type(value).__name__}, want {table[key]}")
    return out


def _required(obj: dict[str, Any], kind: str, where: str) -> list[str]:
    return [f"{where}.{k}: required" for k in sorted(REQUIRED[kind] - set(obj))]


def _pod(template: dict[str, Any], where: str) -> list[str]:
    out = []
    containers = template.get("spec", {}).get("containers")
    if not containers:
        return [f"{where}.spec.containers: required"]
    for i, c in enumerate(containers):
        at = f"{where}.spec.containers[{i}]"
        out += _fields(c, CONTAINER, at)
        out += [f"{at}.name: required"] if "name" not in c else []
        for j, e in enumerate(c.get("env", [])):
            if "name" not in e or ("value" in e) == ("valueFrom" in e):
                out.append(f"{at}.env[{j}]: a name and exactly one of value, valueFrom")
            elif "value" in e and not isinstance(e["value"], str):
                out.append(f"{at}.env[{j}].value: must be a string")
    return out


def _groups(group: dict[str, Any], table: dict[str, Any], kind: str, where: str) -> list[str]:
    out = _fields(group, table, where) + _required(group, kind, where)
    for name in STRING_MAPS:
        for k, v in group.get(name, {}).items():
            if not isinstance(v, str):
                out.append(f"{where}.{name}.{k}: {v!r} must be a string (quote it)")
    return out + _pod(group.get("template", {}), f"{where}.template")


def problems(job: dict[str, Any]) -> list[str]:
    """Every way ``job`` departs from the RayJob v1 fields above."""
    out = []
    if job.get("apiVersion") != "ray.io/v1" or job.get("kind") != "RayJob":
        out.append("apiVersion/kind: want ray.io/v1 RayJob")
    if not job.get("metadata", {}).get("name"):
        out.append("metadata.name: required")
    spec = job.get("spec", {})
    out += _fields(spec, RAYJOB_SPEC, "spec")
    if "submitterPodTemplate" in spec:
        out += _pod(spec["submitterPodTemplate"], "spec.submitterPodTemplate")
    cluster = spec.get("rayClusterSpec", {})
    out += _fields(cluster, RAYCLUSTER_SPEC, "spec.rayClusterSpec")
    out += _required(cluster, "rayClusterSpec", "spec.rayClusterSpec")
    head = cluster.get("headGroupSpec", {})
    out += _groups(head, HEAD_GROUP, "headGroupSpec", "spec.rayClusterSpec.headGroupSpec")
    for i, group in enumerate(cluster.get("workerGroupSpecs", [])):
        at = f"spec.rayClusterSpec.workerGroupSpecs[{i}]"
        out += _groups(group, WORKER_GROUP, "workerGroupSpec", at)
        lo, hi = group.get("minReplicas", 0), group.get("maxReplicas", 0)
        if not lo <= group.get("replicas", lo) <= hi:
            out.append(f"{at}.replicas: outside minReplicas..maxReplicas")
    return out


def _job() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "cluster" / "k8s" / "rayjob.yaml").read_text())


def test_the_rayjob_manifest_has_only_kuberay_fields_of_the_right_types() -> None:
    assert problems(_job()) == []


@pytest.mark.parametrize(
    "mend, want",
    [
        (lambda j: j["spec"].update(entrypointCmd="x"), "spec.entrypointCmd: not a field"),
        (lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].update(
            {"num-cpus": 4}), "rayStartParams.num-cpus: 4 must be a string"),
        (lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("maxReplicas"),
         "workerGroupSpecs[0].maxReplicas: required"),
        (lambda j: j["spec"].update(shutdownAfterJobFinishes="true"),
         "spec.shutdownAfterJobFinishes: str"),
        (lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
         ["containers"][0]["env"].append({"name": "X", "value": 1}), "must be a string"),
    ],
)  # fmt: skip
def test_the_check_catches_what_the_api_server_would_refuse(mend, want) -> None:
    """The check can fail: each mistake a hand-edited manifest could make is named."""
    job = _job()
    mend(job)
    assert any(want in p for p in problems(job)), problems(job)
