"""The face quality gate: pure logic (numpy only), no model, no I/O.

Detect measures each face it finds and keeps only those worth embedding:

- **size**: the shorter side of the detector's box, in frame pixels;
- **probability**: the detector's face probability;
- **sharpness**: the variance of the Laplacian of the grey-level crop (the
  embedder's input, ``crop_size`` pixels square). A small face blown up to the
  crop size, motion blur or defocus all lower it;
- **pose**: yaw and pitch, in degrees, estimated from MTCNN's five landmarks
  (``estimate_pose``).

``assess`` applies the limits (``QualityLimits``: the section's defaults with
the face's camera's overrides merged in, see ``QualityGate``) and returns a
``Verdict``: the measurements, the first reason to reject the face if any
(``REASONS``, the label of the ``vigil_faces_rejected_total`` counter), and a
``score`` in [0, 1] from sharpness and pose that match uses to weigh the face
within its track (size and probability travel on the event separately).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Reasons a face is rejected, in the order they are checked (the first that applies is reported).
SMALL, LOW_PROB, BLURRY, POSE = "small", "low_prob", "blurry", "pose"
REASONS = (SMALL, LOW_PROB, BLURRY, POSE)

# Pose model, in units of the interocular distance (IOD): the nose tip sits about 0.6 IOD in front of the
# eye centres (average anthropometry); MTCNN's eye-to-mouth height is about 1.0 IOD and its nose point
# lies at 0.58 of that height on a frontal face (medians over the face-pairs portraits).
NOSE_DEPTH_IOD = 0.6
EYES_TO_MOUTH_IOD = 1.0
NOSE_HEIGHT_RATIO = 0.58

# Sharpness (variance of the Laplacian on the crop's grey levels) at which a crop counts as fully sharp
# in the quality score. Sharp 160 px crops of faces of 100 px and more measure several hundred.
SHARPNESS_FULL = 150.0


@dataclass(frozen=True)
class QualityLimits:
    """The limits one camera applies (``DetectSettings.quality`` merged with that camera's overrides)."""

    min_face_px: float
    min_prob: float
    min_sharpness: float
    max_yaw_deg: float
    max_pitch_deg: float


@dataclass(frozen=True)
class Verdict:
    """What the gate measured on one face and what it decided."""

    face_px: float
    prob: float
    sharpness: float
    yaw_deg: float
    pitch_deg: float
    reason: str | None  # None: accepted; else one of REASONS
    score: float  # in [0, 1]: sharpness and pose (1 for a sharp frontal face)

    @property
    def accepted(self) -> bool:
        return self.reason is None


def laplacian_variance(image: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of ``image`` (grey HxW, or RGB HxWx3 converted to luma).

    Computed on the interior pixels only (no padding, so the border adds no false edges).
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        if img.shape[2] != 3:
            raise ValueError(f"expected a grey (H, W) or RGB (H, W, 3) image, got shape {img.shape}")
        img = img @ np.array([0.299, 0.587, 0.114])
    if img.ndim != 2 or img.shape[0] < 3 or img.shape[1] < 3:
        raise ValueError(f"expected an image of at least 3x3 pixels, got shape {np.shape(image)}")
    lap = img[:-2, 1:-1] + img[2:, 1:-1] + img[1:-1, :-2] + img[1:-1, 2:] - 4.0 * img[1:-1, 1:-1]
    return float(lap.var())


def estimate_pose(landmarks: Sequence[Sequence[float]]) -> tuple[float, float]:
    """(yaw, pitch) in degrees from MTCNN's five landmarks: left eye, right eye, nose, left and right mouth corner.

    Roll-invariant: the points are expressed along the eye axis and its perpendicular. Yaw comes from the
    nose's sideways offset from the eyes' midpoint relative to the (foreshortened) eye distance, pitch from
    the nose's position between the eyes and the mouth. Yaw is positive when the nose points to the image
    right, pitch when it points down. A rough, landmark-only estimate (a few degrees on near-frontal faces,
    coarser beyond 45 degrees): enough to reject profiles and faces looking far up or down.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
        raise ValueError(f"expected five finite (x, y) landmarks, got {np.shape(landmarks)}")
    left_eye, right_eye, nose, mouth_l, mouth_r = pts
    eye_axis = right_eye - left_eye
    iod = float(np.hypot(*eye_axis))
    mid_eyes = (left_eye + right_eye) / 2
    mouth = (mouth_l + mouth_r) / 2
    if iod < 1e-6:  # eyes on top of each other: a full profile
        return 90.0, 0.0
    u = eye_axis / iod
    v = np.array([-u[1], u[0]])  # perpendicular, pointing down the face (image y grows downwards)
    nose_x = float(np.dot(nose - mid_eyes, u))
    nose_y = float(np.dot(nose - mid_eyes, v))
    mouth_y = float(np.dot(mouth - mid_eyes, v))
    if mouth_y <= 1e-6:  # mouth level with or above the eyes: upside down or degenerate
        return math.degrees(math.atan2(nose_x, NOSE_DEPTH_IOD * iod)), 90.0
    # Pitch first: nose_y / mouth_y = NOSE_HEIGHT_RATIO + (nose depth / eye-to-mouth height) * tan(pitch).
    pitch = math.atan((nose_y / mouth_y - NOSE_HEIGHT_RATIO) * EYES_TO_MOUTH_IOD / NOSE_DEPTH_IOD)
    # Then yaw: the nose's sideways offset over the foreshortened eye distance is its depth towards the
    # camera (after the pitch) times tan(yaw).
    depth = NOSE_DEPTH_IOD * math.cos(pitch) - NOSE_HEIGHT_RATIO * EYES_TO_MOUTH_IOD * math.sin(pitch)
    yaw = math.atan2(nose_x, max(depth, 0.1) * iod)
    return math.degrees(yaw), math.degrees(pitch)


def quality_score(sharpness: float, yaw_deg: float, pitch_deg: float) -> float:
    """In [0, 1]: 1 for a sharp frontal face, falling with blur and with the cosine of yaw and pitch."""
    sharp = min(1.0, max(0.0, sharpness) / SHARPNESS_FULL)
    pose = max(0.0, math.cos(math.radians(yaw_deg)) * math.cos(math.radians(pitch_deg)))
    return round(sharp * pose, 4)


def assess(box: Sequence[float], prob: float, landmarks: Sequence[Sequence[float]], crop: np.ndarray,
           limits: QualityLimits) -> Verdict:
    """Measure one face (box x1, y1, x2, y2 in frame pixels; its crop) and judge it against ``limits``."""
    face_px = float(min(box[2] - box[0], box[3] - box[1]))
    sharpness = laplacian_variance(crop)
    yaw, pitch = estimate_pose(landmarks)
    if face_px < limits.min_face_px:
        reason = SMALL
    elif prob < limits.min_prob:
        reason = LOW_PROB
    elif sharpness < limits.min_sharpness:
        reason = BLURRY
    elif abs(yaw) > limits.max_yaw_deg or abs(pitch) > limits.max_pitch_deg:
        reason = POSE
    else:
        reason = None
    return Verdict(face_px=face_px, prob=float(prob), sharpness=round(sharpness, 2), yaw_deg=round(yaw, 1),
                   pitch_deg=round(pitch, 1), reason=reason, score=quality_score(sharpness, yaw, pitch))


class QualityGate:
    """Per-camera limits: the defaults, with each camera's overrides (only the fields it sets) on top."""

    def __init__(self, defaults: dict, per_camera: dict[str, dict] | None = None):
        self._defaults = QualityLimits(**defaults)
        self._per_camera = {camera: QualityLimits(**{**defaults, **overrides})
                            for camera, overrides in (per_camera or {}).items()}

    @property
    def defaults(self) -> QualityLimits:
        """The limits of a camera without overrides (and of enrolment photos)."""
        return self._defaults

    def limits(self, camera_id: str) -> QualityLimits:
        return self._per_camera.get(camera_id, self._defaults)

    @property
    def min_face_px(self) -> float:
        """The smallest face any camera accepts: how small the detector must search."""
        return min(lim.min_face_px for lim in (self._defaults, *self._per_camera.values()))

    def assess(self, camera_id: str, box, prob: float, landmarks, crop: np.ndarray) -> Verdict:
        return assess(box, prob, landmarks, crop, self.limits(camera_id))


def quality_gate(settings) -> QualityGate:
    """The gate of ``DetectSettings``: size and probability limits from the section, blur and pose from ``quality``."""
    q = settings.quality
    defaults = dict(min_face_px=settings.min_face_px, min_prob=settings.min_prob, min_sharpness=q.min_sharpness,
                    max_yaw_deg=q.max_yaw_deg, max_pitch_deg=q.max_pitch_deg)
    per_camera = {camera: overrides.model_dump(exclude_none=True) for camera, overrides in q.per_camera.items()}
    return QualityGate(defaults, per_camera)
