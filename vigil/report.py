"""The run report: a JSON summary of a ``vigil run`` and an HTML page showing each alert's crop beside the enrolled
photo and its snapshot with every other face blurred (``vigil.export.redact``). Writing it is audited (``export``)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from accountability.actors import Actor
from accountability.audit import AuditLog
from detect.model import FaceDetector
from runtime.files import write_private
from runtime.settings import VigilSettings
from storage.objects import ObjectStore
from vigil.export import jpeg, redact, redaction_detector
from vigil.run import RunSummary


def write_report(summary: RunSummary, path: Path, *, settings: VigilSettings, actor: Actor, audit: AuditLog,
                 deployment_id: str | None = None, detector: FaceDetector | None = None) -> Path:
    """The JSON report, and an HTML page beside it showing each alert's crop next to the enrolled photo and its redacted
    snapshot; audited (``export``) before anything is written."""
    audit.append(actor, "export", summary.run_id, f"report of run {summary.run_id}", {
        "what": "report", "path": str(path), "alerts": [a.alert_id for a in summary.alerts]}, deployment_id=deployment_id)
    report = {
        "run_id": summary.run_id,
        "sources": summary.sources,
        "counts": summary.counts,
        "fps": summary.fps,
        "wall_s": round(summary.wall_s, 2),
        "camera_errors": summary.camera_errors,
        "alerts": [
            {
                "alert_id": a.alert_id, "person_id": a.person_id, "camera_id": a.camera_id, "score": round(a.score, 4),
                "source_ts": a.source_ts.isoformat(), "snapshot_key": a.snapshot_key, "crop_key": a.crop_key,
                "deployment_id": a.deployment_id, "case": a.case,
            }
            for a in summary.alerts
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(report, indent=2) + "\n")

    # The HTML embeds the images (data URIs) so it can be opened anywhere without S3 access.
    store = ObjectStore(settings.s3)
    rows = []
    if summary.alerts and detector is None:
        detector = redaction_detector(settings)
    for a in summary.alerts:
        crop = base64.b64encode(store.get_bytes(settings.s3.evidence_bucket, a.crop_key)).decode()
        frame = np.asarray(Image.open(io.BytesIO(store.get_bytes(settings.s3.evidence_bucket, a.snapshot_key))).convert("RGB"))
        snapshot = base64.b64encode(jpeg(redact(frame, a.box, detector).image)).decode()
        photo_keys = store.list_keys(settings.s3.watchlist_bucket, f"{a.person_id}/")
        photo = base64.b64encode(store.get_bytes(settings.s3.watchlist_bucket, photo_keys[0])).decode() if photo_keys else ""
        rows.append(
            f"<tr><td>{html.escape(a.person_id)}</td><td>{html.escape(a.camera_id)}</td><td>{a.source_ts:%Y-%m-%d %H:%M:%S}</td>"
            f"<td>{a.score:.3f}</td><td><img src='data:image/jpeg;base64,{crop}' height=120></td>"
            f"<td>{f'<img src=data:image/jpeg;base64,{photo} height=120>' if photo else 'n/a'}</td>"
            f"<td><img src='data:image/jpeg;base64,{snapshot}' height=240></td></tr>"
        )
    page = (
        "<!doctype html><meta charset=utf-8><title>Vigil run " + html.escape(summary.run_id) + "</title>"
        "<style>body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd}</style>"
        f"<h1>Vigil run {html.escape(summary.run_id)}</h1><p>{html.escape(json.dumps(summary.counts))}</p>"
        "<table><tr><th>person</th><th>camera</th><th>source time</th><th>score</th><th>seen (crop)</th><th>enrolled photo</th>"
        "<th>snapshot (other faces blurred)</th></tr>"
        + "".join(rows) + "</table>"
    )
    write_private(path.with_suffix(".html"), page)
    return path
