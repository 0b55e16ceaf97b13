"""The image the manifests run: what the Dockerfile installs, and that the runtime lock holds the runtime only.

The image itself cannot be built here (no container engine); its installed size is measured by installing
requirements-runtime.lock into a fresh venv (docs/deploy.md, "The image").
"""

from __future__ import annotations

import ast
import re
import tomllib
from importlib.metadata import packages_distributions

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.k8s.manifests import ROOT, config_env, of_kind, pod_spec, render, stage_deployments

DOCKERFILE = (ROOT / "Dockerfile").read_text()
# Rooms of the repository that serve development only: the image carries their code but none of their dependencies.
DEV_ROOMS = {"localstack", "synthetic", "bench"}
# Imported by shipped code that runs only in the image's build stage: the weight converter (embed/weights.py).
BUILD_ONLY = {"tensorboard"}


def pins(path: str) -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in (ROOT / path).read_text().splitlines())
    return {canonicalize_name(r.name): str(r.specifier) for r in map(Requirement, filter(None, lines))}


def direct(path: str) -> set[str]:
    lines = (line.split("#")[0].strip() for line in (ROOT / path).read_text().splitlines())
    return {canonicalize_name(Requirement(line).name) for line in lines if line and not line.startswith("-")}


def runtime_stage() -> str:
    """The Dockerfile up to the local-stack target: what the runtime image is built from."""
    return DOCKERFILE.split("AS localstack", 1)[0]


def image_user() -> str:
    user = re.search(r"^USER (\d+):(\d+)$", runtime_stage(), re.M)
    assert user and user.group(1) != "0", "the image must set a numeric non-root USER"
    return user.group(1)


def test_dockerfile_builds_what_the_manifests_expect():
    stage = runtime_stage()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", stage, re.M)
    assert "COPY requirements-runtime.lock" in stage and "pip install --no-deps ." in stage
    instructions = "\n".join(line for line in stage.splitlines() if not line.lstrip().startswith("#"))
    assert "requirements-dev.lock" not in instructions.replace("-c /src/requirements-dev.lock tensorboard", ""), \
        "the runtime image installs the dev lock only to pin the weight converter, in a folder it does not keep"
    assert "rm -rf /tmp/convert" in stage
    assert "python -m embed.weights --out /models" in stage
    assert re.search(r"^ENTRYPOINT \[\"vigil\"\]$", stage, re.M)
    assert DOCKERFILE.rstrip().endswith("FROM runtime"), "the default target is the runtime image, not the local stack"
    image_user()


def test_runtime_lock_holds_no_development_package():
    runtime, dev = pins("requirements-runtime.lock"), pins("requirements-dev.lock")
    assert not set(runtime) & set(dev), "a package is locked twice"
    assert not direct("requirements-dev.in") & set(runtime), "a local-stack server, converter or test tool in the image"
    assert direct("requirements-runtime.in") <= set(runtime), "requirements-runtime.lock is stale"
    assert direct("requirements-dev.in") <= set(dev), "requirements-dev.lock is stale"
    for name in ("zstandard", "cramjam"):  # kafka.compression=zstd: kafka-python's codec and aiokafka's
        assert name in runtime, f"{name} missing: the production producers could not compress"


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    return {name.split(".")[0] for name in names}


def test_runtime_code_imports_only_runtime_packages():
    """Every third-party module the shipped packages import comes from a distribution in the runtime lock."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    rooms = {name.rstrip("*") for name in include} - DEV_ROOMS
    runtime = set(pins("requirements-runtime.lock"))
    providers = packages_distributions()
    missing = {}
    for room in sorted(rooms):
        for path in (ROOT / room).rglob("*.py"):
            for module in _imports(path) - rooms - DEV_ROOMS - BUILD_ONLY:
                dists = {canonicalize_name(d) for d in providers.get(module, [])}
                if dists and not dists & runtime:
                    missing.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    assert not missing, f"imported by shipped code but not in requirements-runtime.lock: {missing}"


def test_pods_run_as_the_image_user():
    uid = image_user()
    docs = render("base")
    for d in of_kind(docs, "Deployment"):
        assert str(pod_spec(d)["securityContext"]["runAsUser"]) == uid, f"{d['metadata']['name']}: uid differs from the image's"
    for d in stage_deployments(docs):
        assert config_env(docs, d)["VIGIL_MODELS__WEIGHTS_DIR"] == "/models", "weights are baked into /models"
