"""Ingest publishes a camera's frames only while a deployment covers it (the gate detect and match apply again)."""

from __future__ import annotations

import uuid

import pytest

from ingest.service import IngestService
from runtime.settings import CameraSettings
from synthetic.footage import make_pattern_clip
from accountability.deployments import Deployments
from tests.accountability_helpers import TESTER, deploy
from tests.ingest.conftest import published, with_ingest

pytestmark = pytest.mark.services


def test_only_cameras_inside_an_active_deployment_are_published(ingest_settings, tmp_path):
    clip = make_pattern_clip(tmp_path / "clip.mp4", n_frames=20, fps=10, size=(320, 240))
    inside, outside, ended = (f"cam-{uuid.uuid4().hex[:6]}" for _ in range(3))
    deploy(ingest_settings, [inside])
    gone = deploy(ingest_settings, [ended])
    with Deployments(ingest_settings) as deployments:
        deployments.end(TESTER, gone.deployment_id, "test: ended before the cameras start")
    settings = with_ingest(ingest_settings, publish_outside_deployments=False)
    reports = IngestService(settings, [CameraSettings(id=c, url=str(clip)) for c in (inside, outside, ended)]).run()
    assert {c: r.state for c, r in reports.items()} == dict.fromkeys((inside, outside, ended), "ended")
    frames = published(settings, [inside, outside, ended])
    assert len(frames[inside]) == reports[inside].frames > 0 and reports[inside].dropped.get("outside_deployment", 0) == 0
    assert frames[outside] == [] and frames[ended] == []
    assert reports[outside].frames == 0 and reports[outside].dropped["outside_deployment"] == reports[inside].frames
