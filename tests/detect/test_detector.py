"""FaceDetector on real photos (face-pairs dataset, face_recognition samples)."""

from __future__ import annotations

import numpy as np
import pytest

from detect.model import DetectedFace, FaceDetector, crop_box, crop_face
from runtime.settings import DetectSettings

from tests.conftest import load_rgb

pytestmark = pytest.mark.models


def _check_face(face: DetectedFace, frame: np.ndarray, settings: DetectSettings) -> None:
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = face.box
    assert x2 > x1 and y2 > y1
    assert min(x2 - x1, y2 - y1) >= settings.min_face_px
    # MTCNN boxes of faces cut by the frame edge poke out of it, never far
    assert -0.5 * (x2 - x1) < x1 and x2 < w + 0.5 * (x2 - x1)
    assert -0.5 * (y2 - y1) < y1 and y2 < h + 0.5 * (y2 - y1)
    assert settings.min_prob <= face.prob <= 1.0
    assert len(face.landmarks) == 5
    for lx, ly in face.landmarks:  # eyes, nose and mouth corners lie inside the box
        assert x1 <= lx <= x2 and y1 <= ly <= y2
    (lex, ley), (rex, rey) = face.landmarks[0], face.landmarks[1]
    assert lex < rex  # left eye (in the image) left of the right eye
    assert max(ley, rey) < face.landmarks[3][1] and max(ley, rey) < face.landmarks[4][1]  # eyes above the mouth
    assert face.crop.shape == (settings.crop_size, settings.crop_size, 3)
    assert face.crop.dtype == np.uint8


def test_single_face_photo(detector, face_pairs):
    frame = load_rgb(face_pairs / "img1.jpg")  # 1382 x 1868, one large frontal face
    (faces,) = detector.detect([frame])
    assert len(faces) == 1
    face = faces[0]
    _check_face(face, frame, detector.settings)
    # a portrait: the face is large and in the upper-middle of the photo
    h, w = frame.shape[:2]
    assert 0.25 * w < face.width < 0.7 * w
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    assert 0.3 * w < cx < 0.7 * w and 0.15 * h < cy < 0.6 * h
    assert face.prob > 0.99
    assert face.crop.std() > 20  # a real image, not padding


@pytest.mark.parametrize("value", [0, 128, 255])
def test_uniform_frames_have_no_faces(detector, value):
    frames = [np.full((480, 640, 3), value, np.uint8), np.full((720, 1280, 3), value, np.uint8)]
    assert detector.detect(frames) == [[], []]


def test_noise_frame_has_no_faces(detector):
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert detector.detect([frame]) == [[]]


def test_empty_input(detector):
    assert detector.detect([]) == []


def test_several_faces(detector, face_pairs):
    selfie = load_rgb(face_pairs / "selfie-many-people.jpg")
    couple = load_rgb(face_pairs / "couple.jpg", max_side=1280)
    selfie_faces, couple_faces = detector.detect([selfie, couple])
    assert len(selfie_faces) >= 3
    assert len(couple_faces) == 2
    for faces, frame in ((selfie_faces, selfie), (couple_faces, couple)):
        for face in faces:
            _check_face(face, frame, detector.settings)
        areas = [f.width * f.height for f in faces]
        assert areas == sorted(areas, reverse=True)  # largest first
    # the couple stand side by side: their boxes do not overlap
    a, b = sorted(couple_faces, key=lambda f: f.box[0])
    assert a.box[2] < b.box[0]


def test_batch_of_mixed_sizes_keeps_order_and_matches_single_frames(detector, face_pairs):
    portrait = load_rgb(face_pairs / "img1.jpg", max_side=800)
    selfie = load_rgb(face_pairs / "selfie-many-people.jpg")
    blank = np.zeros((480, 640, 3), np.uint8)
    frames = [portrait, blank, selfie, blank.copy(), selfie.copy()]
    results = detector.detect(frames)
    assert [len(r) for r in results][:2] == [1, 0] and results[3] == []
    assert len(results[2]) >= 3 and len(results[2]) == len(results[4])
    alone = {"portrait": detector.detect([portrait])[0], "selfie": detector.detect([selfie])[0]}
    for batched, single in ((results[0], alone["portrait"]), (results[2], alone["selfie"]), (results[4], alone["selfie"])):
        assert len(batched) == len(single)
        for fb, fs in zip(batched, single):
            np.testing.assert_allclose(fb.box, fs.box, atol=0.5)
            assert abs(fb.prob - fs.prob) < 1e-3


def test_batch_larger_than_batch_size(device, face_pairs):
    detector = FaceDetector(DetectSettings(batch_size=2), device)
    selfie = load_rgb(face_pairs / "selfie-many-people.jpg", max_side=400)
    blank = np.zeros_like(selfie)
    results = detector.detect([selfie, blank, selfie, blank, selfie])
    counts = [len(r) for r in results]
    assert counts[1] == counts[3] == 0
    assert counts[0] == counts[2] == counts[4] >= 1


def test_min_face_px_filters_small_faces(device, face_pairs):
    selfie = load_rgb(face_pairs / "selfie-many-people.jpg")
    every = FaceDetector(DetectSettings(min_face_px=40), device).detect([selfie])[0]
    big = FaceDetector(DetectSettings(min_face_px=120), device).detect([selfie])[0]
    assert 1 <= len(big) < len(every)
    assert all(min(f.width, f.height) >= 120 for f in big)


def test_min_prob_filters_the_false_face_in_obama_jpg(device, samples_dir):
    # At full resolution MTCNN also sees a weak face (p ~ 0.82) in the curtain behind Obama
    # (on the downscaled frame it does not: detect_face_px = min_face_px turns the downscale off).
    frame = load_rgb(samples_dir / "watchlist" / "obama" / "obama.jpg")
    full = DetectSettings().min_face_px
    strict = FaceDetector(DetectSettings(min_prob=0.95, detect_face_px=full), device).detect([frame])[0]
    lax = FaceDetector(DetectSettings(min_prob=0.7, detect_face_px=full), device).detect([frame])[0]
    assert len(strict) == 1 and strict[0].prob > 0.99
    assert len(lax) == 2 and min(f.prob for f in lax) < 0.95


def test_downscaled_detection_maps_back_to_the_full_frame(device, face_pairs):
    """MTCNN on the frame at half size finds the same faces; boxes and landmarks come back in frame pixels and the
    crop is cut from the full-resolution frame at that box."""
    frame = load_rgb(face_pairs / "selfie-many-people.jpg")
    full_settings = DetectSettings(detect_face_px=DetectSettings().min_face_px)
    full = FaceDetector(full_settings, device).detect([frame])[0]
    small_detector = FaceDetector(DetectSettings(), device)
    assert small_detector.detect_scale == 0.5
    small = small_detector.detect([frame])[0]
    assert len(small) == len(full) >= 3
    for a in small:
        b = min(full, key=lambda f: np.abs(np.subtract(f.box, a.box)).sum())
        side = b.width
        assert np.abs(np.subtract(a.box, b.box)).max() < 0.08 * side
        assert np.abs(np.subtract(a.landmarks, b.landmarks)).max() < 0.08 * side
        np.testing.assert_array_equal(a.crop, crop_face(frame, a.box, 160, 32))


def test_rejects_frames_that_are_not_rgb_uint8(detector):
    with pytest.raises(ValueError):
        detector.detect([np.zeros((480, 640), np.uint8)])
    with pytest.raises(ValueError):
        detector.detect([np.zeros((480, 640, 3), np.float32)])
    with pytest.raises(ValueError):
        detector.detect([np.zeros((480, 640, 4), np.uint8)])


def test_crop_matches_facenet_pytorch_extract_face(face_pairs):
    from PIL import Image
    from facenet_pytorch.models.utils.detect_face import extract_face

    frame = load_rgb(face_pairs / "selfie-many-people.jpg")
    for box in [(347.3, 114.2, 486.9, 293.5), (-17.2, 243.1, 69.4, 353.9)]:  # one face cut by the frame edge
        for margin in (0, 32, 44):
            ref = extract_face(Image.fromarray(frame), np.array(box), 160, margin).permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(crop_face(frame, box, 160, margin), ref.astype(np.uint8))


def test_margin_is_in_crop_pixels():
    # a 128-px box with margin 32 in a 160-px crop: 32 crop px = 32 * 128 / 128 frame px in all, 16 a side
    assert crop_box((100, 100, 228, 228), 1000, 1000, 160, 32) == (84, 84, 244, 244)
    assert crop_box((100, 100, 228, 228), 1000, 1000, 160, 0) == (100, 100, 228, 228)
    assert crop_box((0, 0, 128, 128), 200, 200, 160, 32) == (0, 0, 144, 144)  # clipped to the frame
    with pytest.raises(ValueError):
        crop_box((0, 0, 10, 10), 100, 100, 160, 160)
