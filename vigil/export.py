"""Redacted exports: an alert's evidence leaves the system with every face but the alerted one blurred.

``redact`` finds the faces in a snapshot with the real detector (searching
smaller and less likely faces than the pipeline does: a missed face stays
visible) and pixelates, then blurs, every one of them except the face whose
box overlaps the alert's box most. ``export_alert`` writes the redacted
snapshot, the alerted face's crop and the alert's record to a folder, after an
``export`` audit event; the run report (``vigil.report``) uses ``redact`` too.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from accountability.actors import Actor, require
from accountability.audit import AuditLog
from accountability.topics import read_all
from detect.model import FaceDetector
from runtime.device import device_from_settings
from runtime.settings import VigilSettings
from schemas.events import AlertEvent, Box
from schemas.topics import ALERTS
from storage.objects import ObjectStore

BLOCKS = 6  # a redacted face is reduced to BLOCKS x BLOCKS cells before the blur
MARGIN = 0.25  # of the box's size, added on each side: hair, ears and chin go too
KEEP_IOU = 0.3  # a detected face is the alerted one when its box overlaps the alert's this much


def redaction_detector(settings: VigilSettings) -> FaceDetector:
    """The detector ``redact`` needs: faces down to 20 px and probability 0.5, for recall over precision."""
    detect = settings.detect.model_copy(update={"min_face_px": 20, "min_prob": 0.5, "detect_face_px": 20})
    return FaceDetector(detect, device_from_settings(settings.models))


def _iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Redaction:
    image: np.ndarray
    blurred: int  # faces blurred
    kept: bool  # a detected face was recognised as the alerted one


def redact(image: np.ndarray, keep: Box, detector: FaceDetector) -> Redaction:
    """``image`` with every detected face blurred except the one that overlaps ``keep`` most (if any does)."""
    keep_box = (keep.x1, keep.y1, keep.x2, keep.y2)
    faces = detector.detect([image])[0]
    overlaps = [_iou(face.box, keep_box) for face in faces]
    kept = int(np.argmax(overlaps)) if overlaps and max(overlaps) >= KEEP_IOU else None
    out = Image.fromarray(image)
    height, width = image.shape[:2]
    for i, face in enumerate(faces):
        if i == kept:
            continue
        x1, y1, x2, y2 = face.box
        mx, my = (x2 - x1) * MARGIN, (y2 - y1) * MARGIN
        region = (max(0, int(x1 - mx)), max(0, int(y1 - my)), min(width, int(x2 + mx) + 1), min(height, int(y2 + my) + 1))
        if region[2] <= region[0] or region[3] <= region[1]:
            continue
        patch = out.crop(region)
        size = patch.size
        patch = patch.resize((BLOCKS, BLOCKS), Image.BILINEAR).resize(size, Image.NEAREST)
        out.paste(patch.filter(ImageFilter.GaussianBlur(max(size) / BLOCKS)), region[:2])
    return Redaction(np.asarray(out), len(faces) - (kept is not None), kept is not None)


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def find_alert(settings: VigilSettings, alert_id: str) -> AlertEvent:
    for record in read_all(settings, ALERTS):
        if isinstance(record.event, AlertEvent) and record.event.alert_id == alert_id:
            return record.event
    raise LookupError(f"no alert {alert_id!r} on {ALERTS.name} (alerts are kept {ALERTS.retention_ms // 86_400_000} days)")


def export_alert(settings: VigilSettings, actor: Actor, alert_id: str, reason: str, out_dir: Path, *, audit: AuditLog,
                 detector: FaceDetector | None = None) -> list[Path]:
    """Write the alert's redacted snapshot, its crop and its record to ``out_dir`` (role ``reviewer``, ``authoriser`` or
    ``auditor``); audited (``export``) first. Returns the files written."""
    require(actor, "reviewer", "authoriser", "auditor")
    if not reason.strip():
        raise ValueError("an export needs a reason")
    alert = find_alert(settings, alert_id)
    store = ObjectStore(settings.s3)
    bucket = settings.s3.evidence_bucket
    snapshot = np.asarray(Image.open(io.BytesIO(store.get_bytes(bucket, alert.snapshot_key))).convert("RGB"))
    crop = store.get_bytes(bucket, alert.crop_key)
    redaction = redact(snapshot, alert.box, detector or redaction_detector(settings))
    audit.append(actor, "export", alert.person_id, reason, {
        "what": "evidence", "alert_id": alert_id, "camera_id": alert.camera_id, "faces_blurred": redaction.blurred,
        "case": alert.case}, deployment_id=alert.deployment_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {f"{alert_id}-snapshot.jpg": jpeg(redaction.image), f"{alert_id}-crop.jpg": crop,
             f"{alert_id}.json": json.dumps({"alert": alert.model_dump(mode="json"), "exported_by": actor.name, "reason": reason,
                                              "faces_blurred": redaction.blurred}, indent=2).encode()}
    for name, data in files.items():
        (out_dir / name).write_bytes(data)
    return [out_dir / name for name in files]
