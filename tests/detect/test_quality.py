import math

import numpy as np
import pytest

from detect.quality import (
    BLURRY, LOW_PROB, POSE, SMALL, QualityGate, QualityLimits, assess, estimate_pose, laplacian_variance, quality_score,
)
from runtime.settings import DetectSettings, FaceQualityOverrides, FaceQualitySettings

LIMITS = QualityLimits(min_face_px=40, min_prob=0.95, min_sharpness=15, max_yaw_deg=45, max_pitch_deg=35)

# A face model in interocular units (x right, y down, z towards the camera): eyes, nose tip, mouth corners.
# Its proportions are those estimate_pose assumes (see detect.quality).
MODEL = np.array([[-0.5, 0, 0], [0.5, 0, 0], [0, 0.58, 0.6], [-0.4, 1.0, 0], [0.4, 1.0, 0]], dtype=float)


def project(yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0, scale=60.0, at=(300.0, 200.0)) -> list[tuple[float, float]]:
    """Landmarks of MODEL turned by yaw (nose to image right), pitched (nose down), rolled, orthographic."""
    y, p, r = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    yaw = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    pitch = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    pts = (yaw @ pitch @ MODEL.T).T[:, :2]
    roll = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    pts = (roll @ pts.T).T * scale + np.asarray(at)
    return [tuple(p) for p in pts]


def sharp_crop(seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(160, 160, 3), dtype=np.uint8)


def blur(image: np.ndarray, passes: int) -> np.ndarray:
    out = image.astype(np.float64)
    for _ in range(passes):  # 3x3 box blur, edges replicated
        p = np.pad(out, ((1, 1), (1, 1), (0, 0)), mode="edge")
        out = sum(p[dy:dy + out.shape[0], dx:dx + out.shape[1]] for dy in range(3) for dx in range(3)) / 9
    return out.round().astype(np.uint8)


def test_laplacian_variance_is_zero_on_flat_and_falls_with_blur():
    assert laplacian_variance(np.full((50, 60), 128, np.uint8)) == 0.0
    assert laplacian_variance(np.tile(np.linspace(0, 255, 60), (50, 1))) == pytest.approx(0, abs=1e-9)  # a ramp has no curvature
    crop = sharp_crop()
    sharp, soft, softer = (laplacian_variance(blur(crop, n)) for n in (0, 1, 3))
    assert sharp > 1000 > soft > softer > 0
    grey = crop @ np.array([0.299, 0.587, 0.114])
    assert laplacian_variance(crop) == pytest.approx(laplacian_variance(grey))


def test_laplacian_variance_refuses_bad_shapes():
    with pytest.raises(ValueError):
        laplacian_variance(np.zeros((2, 2)))
    with pytest.raises(ValueError):
        laplacian_variance(np.zeros((10, 10, 4)))


def test_frontal_face_is_frontal_at_any_roll_size_and_place():
    for roll in (-40, 0, 25, 90):
        yaw, pitch = estimate_pose(project(roll_deg=roll, scale=30 + roll % 50, at=(10.0 * roll, 50.0)))
        assert abs(yaw) < 0.5 and abs(pitch) < 0.5


@pytest.mark.parametrize("angle", [-60, -30, -10, 10, 30, 60])
def test_yaw_and_pitch_are_recovered(angle):
    yaw, pitch = estimate_pose(project(yaw_deg=angle))
    assert yaw == pytest.approx(angle, abs=1) and abs(pitch) < 1
    yaw, pitch = estimate_pose(project(pitch_deg=angle))
    assert abs(yaw) < 1 and pitch == pytest.approx(angle, abs=1)
    yaw, pitch = estimate_pose(project(yaw_deg=angle, roll_deg=20))  # roll changes nothing
    assert yaw == pytest.approx(angle, abs=1)


def test_combined_pose_is_recovered():
    yaw, pitch = estimate_pose(project(yaw_deg=30, pitch_deg=-20, roll_deg=-15))
    assert yaw == pytest.approx(30, abs=2) and pitch == pytest.approx(-20, abs=2)


def test_degenerate_landmarks():
    eye = (100.0, 100.0)
    assert estimate_pose([eye, eye, (100, 120), (95, 140), (105, 140)])[0] == 90.0  # eyes coincide: profile
    with pytest.raises(ValueError):
        estimate_pose([(0, 0)] * 4)
    with pytest.raises(ValueError):
        estimate_pose([(0, 0)] * 4 + [(float("nan"), 0)])


def test_quality_score_falls_with_blur_and_pose():
    assert quality_score(1000, 0, 0) == 1.0
    assert quality_score(75, 0, 0) == pytest.approx(0.5)
    assert quality_score(1000, 60, 0) == pytest.approx(0.5)
    assert quality_score(1000, 90, 0) == pytest.approx(0, abs=1e-6)
    assert 0 <= quality_score(-5, 200, 0) <= 1


def test_assess_accepts_a_good_face_and_names_the_first_failing_reason():
    box, crop = (100, 100, 180, 190), sharp_crop()
    good = assess(box, 0.99, project(), crop, LIMITS)
    assert good.accepted and good.reason is None and good.face_px == 80 and 0 < good.score <= 1
    assert assess((100, 100, 130, 190), 0.99, project(), crop, LIMITS).reason == SMALL
    assert assess(box, 0.9, project(), crop, LIMITS).reason == LOW_PROB
    assert assess(box, 0.99, project(), np.full((160, 160, 3), 90, np.uint8), LIMITS).reason == BLURRY
    assert assess(box, 0.99, project(yaw_deg=60), crop, LIMITS).reason == POSE
    assert assess(box, 0.99, project(pitch_deg=-50), crop, LIMITS).reason == POSE
    # Several failures: the first in REASONS order is reported.
    assert assess((0, 0, 20, 20), 0.5, project(yaw_deg=80), np.zeros((160, 160, 3), np.uint8), LIMITS).reason == SMALL


def test_gate_merges_per_camera_overrides_over_defaults():
    defaults = dict(min_face_px=40, min_prob=0.95, min_sharpness=15, max_yaw_deg=45, max_pitch_deg=35)
    gate = QualityGate(defaults, {"lobby": {"min_face_px": 80}, "gate": {"max_yaw_deg": 70, "min_face_px": 24}})
    assert gate.limits("elsewhere") == QualityLimits(**defaults)
    assert gate.limits("lobby") == QualityLimits(**{**defaults, "min_face_px": 80})
    assert gate.limits("gate").max_yaw_deg == 70 and gate.limits("gate").min_prob == 0.95
    assert gate.min_face_px == 24  # the detector must search down to the smallest any camera accepts
    crop, box = sharp_crop(), (0, 0, 60, 60)
    assert gate.assess("lobby", box, 0.99, project(), crop).reason == SMALL
    assert gate.assess("elsewhere", box, 0.99, project(), crop).accepted
    assert gate.assess("gate", box, 0.99, project(yaw_deg=60), crop).accepted
    assert gate.assess("elsewhere", box, 0.99, project(yaw_deg=60), crop).reason == POSE


def test_detect_settings_make_the_gate():
    from detect.quality import quality_gate

    settings = DetectSettings(min_prob=0.9, min_face_px=30, quality=FaceQualitySettings(
        min_sharpness=20, per_camera={"lobby": FaceQualityOverrides(min_face_px=60, max_pitch_deg=20)}))
    gate = quality_gate(settings)
    assert gate.limits("x") == QualityLimits(min_face_px=30, min_prob=0.9, min_sharpness=20, max_yaw_deg=45, max_pitch_deg=35)
    assert gate.limits("lobby") == QualityLimits(min_face_px=60, min_prob=0.9, min_sharpness=20, max_yaw_deg=45, max_pitch_deg=20)
    with pytest.raises(ValueError):  # a misspelt override is an error, not silently ignored
        FaceQualityOverrides.model_validate({"min_face": 60})


def test_per_camera_quality_from_the_environment(monkeypatch, tmp_path):
    from runtime.settings import load_settings

    monkeypatch.setenv("VIGIL_CONFIG", str(tmp_path / "none.yaml"))
    (tmp_path / "none.yaml").write_text("")
    monkeypatch.setenv("VIGIL_DETECT__QUALITY__PER_CAMERA", '{"lobby": {"min_face_px": 64}}')
    quality = load_settings().detect.quality
    assert quality.per_camera["lobby"].min_face_px == 64 and quality.per_camera["lobby"].min_prob is None
