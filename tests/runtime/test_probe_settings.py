"""The stream stages' Deployments agree with the runtime's bounds: the pod's grace period leaves room after
stage.shutdown_grace_s for the commit and leaving the group, and the startup probe waits longer than start() may
retry an unavailable dependency (stage.dependency_timeout_s)."""

from __future__ import annotations

from pathlib import Path

import yaml

from runtime.settings import StageSettings
from schemas.stages import BY_NAME

BASE = Path(__file__).resolve().parents[2] / "k8s" / "base"
COMMIT_AND_LEAVE_S = 10  # the commit and the group's LeaveGroup after the batch in hand


def config_env() -> dict[str, str]:
    lines = (BASE / "config.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))


def stage_settings() -> StageSettings:
    prefix = "VIGIL_STAGE__"
    return StageSettings(**{k[len(prefix):].lower(): v for k, v in config_env().items() if k.startswith(prefix)})


def stream_deployments():
    for spec in BY_NAME.values():
        if spec.source is None:
            continue
        docs = [d for d in yaml.safe_load_all((BASE / f"{spec.name}.yaml").read_text()) if d and d["kind"] == "Deployment"]
        assert len(docs) == 1, spec.name
        yield spec.name, docs[0]["spec"]["template"]["spec"]


def test_grace_period_covers_the_batch_in_hand():
    settings = stage_settings()
    for name, pod in stream_deployments():
        grace = pod["terminationGracePeriodSeconds"]
        assert grace >= settings.shutdown_grace_s + COMMIT_AND_LEAVE_S, f"{name}: {grace}s vs shutdown_grace_s={settings.shutdown_grace_s}"


def test_startup_probe_outlasts_the_dependency_bound():
    settings = stage_settings()
    for name, pod in stream_deployments():
        probe = pod["containers"][0]["startupProbe"]
        window = probe["periodSeconds"] * probe["failureThreshold"]
        assert window > settings.dependency_timeout_s, f"{name}: startup window {window}s"
