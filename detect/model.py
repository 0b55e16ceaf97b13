"""Face detector: facenet-pytorch's MTCNN, batched, plus FaceNet-style crops.

MTCNN's weights (P-, R- and O-net) ship inside the facenet-pytorch wheel, so
nothing is downloaded. Frames are RGB ``uint8`` arrays of shape (H, W, 3);
frames of equal size run through MTCNN as one batch.

Crops follow facenet-pytorch's ``extract_face``: the box is widened by
``crop_margin`` pixels *of the output crop* (``margin * box_side /
(crop_size - margin)`` frame pixels in all), clipped to the frame, and resized
to ``crop_size`` x ``crop_size``. The margin matters with the FaceNet weights:
32-44 separates identities, 0 does not.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from runtime.settings import DetectSettings

log = logging.getLogger(__name__)

# MTCNN searches faces down to this fraction of min_face_px; the box filter on
# min_face_px then decides. The slack keeps faces whose box comes out slightly
# larger than the scale MTCNN found them at, at a fraction of the cost of
# searching every face size down to 20 px.
_SEARCH_SLACK = 0.8


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One face in a frame. Coordinates are frame pixels (floats)."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    landmarks: list[tuple[float, float]]  # left eye, right eye, nose, left mouth, right mouth
    prob: float
    crop: np.ndarray = field(repr=False)  # RGB uint8 (crop_size, crop_size, 3)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


def crop_box(box, frame_w: int, frame_h: int, crop_size: int, margin: int) -> tuple[int, int, int, int]:
    """The frame region (integer x1, y1, x2, y2) that ``extract_face`` would crop."""
    if margin >= crop_size:
        raise ValueError(f"crop_margin ({margin}) must be smaller than crop_size ({crop_size})")
    x1, y1, x2, y2 = (float(v) for v in box)
    mx = margin * (x2 - x1) / (crop_size - margin)
    my = margin * (y2 - y1) / (crop_size - margin)
    return (
        int(max(x1 - mx / 2, 0)),
        int(max(y1 - my / 2, 0)),
        int(min(x2 + mx / 2, frame_w)),
        int(min(y2 + my / 2, frame_h)),
    )


def crop_face(frame: np.ndarray, box, crop_size: int = 160, margin: int = 32) -> np.ndarray | None:
    """RGB uint8 crop (crop_size, crop_size, 3) of ``box`` widened by ``margin``
    crop pixels, or None when the box does not overlap the frame."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = crop_box(box, w, h, crop_size, margin)
    if x2 <= x1 or y2 <= y1:
        return None
    region = Image.fromarray(np.ascontiguousarray(frame[y1:y2, x1:x2]))
    return np.array(region.resize((crop_size, crop_size), Image.BILINEAR), dtype=np.uint8)


def _check_frame(i: int, frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        desc = f"{type(frame).__name__} {getattr(frame, 'shape', '')} {getattr(frame, 'dtype', '')}"
        raise ValueError(f"frame {i}: expected an RGB uint8 array (H, W, 3), got {desc}")


class FaceDetector:
    """MTCNN on ``device``, filtering by ``min_prob`` and ``min_face_px``."""

    def __init__(self, settings: DetectSettings | None = None, device: torch.device | str = "cpu"):
        from facenet_pytorch import MTCNN  # imports torchvision; keep it off module import

        self.settings = settings or DetectSettings()
        self.device = torch.device(device)
        s = self.settings
        if s.crop_margin >= s.crop_size:
            raise ValueError(f"crop_margin ({s.crop_margin}) must be smaller than crop_size ({s.crop_size})")
        # MTCNN sees frames scaled by this factor; its pyramid would start at 12 / min_face_size of
        # the frame anyway, so scaling first only saves resampling the pyramid from the full frame.
        self.detect_scale = min(1.0, s.detect_face_px / s.min_face_px)
        self.mtcnn = MTCNN(
            image_size=s.crop_size,
            margin=s.crop_margin,
            min_face_size=max(12, int(s.min_face_px * self.detect_scale * _SEARCH_SLACK)),
            keep_all=True,
            post_process=False,
            select_largest=True,  # faces of a frame come largest first
            device=self.device,
        ).eval().to(memory_format=torch.channels_last)  # ~25 % faster on the CPU (bench/models.py)

    def detect(self, frames: list[np.ndarray]) -> list[list[DetectedFace]]:
        """Faces of each frame, in frame order; an empty list for a frame without any."""
        for i, frame in enumerate(frames):
            _check_frame(i, frame)
        results: list[list[DetectedFace]] = [[] for _ in frames]
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, frame in enumerate(frames):
            by_size[frame.shape[:2]].append(i)
        step = self.settings.batch_size
        for indices in by_size.values():
            for start in range(0, len(indices), step):
                chunk = indices[start:start + step]
                for i, faces in zip(chunk, self._detect_same_size([frames[i] for i in chunk])):
                    results[i] = faces
        return results

    def warm_up(self, size: tuple[int, int] = (640, 360)) -> None:
        """Run each of the three nets once, so the first real frame does not pay for the runtime's lazy set-up."""
        self.detect([np.full((size[1], size[0], 3), 128, dtype=np.uint8)])
        with torch.inference_mode():
            self.mtcnn.rnet(torch.zeros(1, 3, 24, 24, device=self.device))
            self.mtcnn.onet(torch.zeros(1, 3, 48, 48, device=self.device))

    def _downscale(self, frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        image = Image.fromarray(frame)
        factor = 1 / self.detect_scale
        if factor == int(factor) and image.size == (size[0] * int(factor), size[1] * int(factor)):
            return np.asarray(image.reduce(int(factor)))  # box average: exact for whole factors, and ~4x faster
        return np.asarray(image.resize(size, Image.BILINEAR))

    def _detect_same_size(self, frames: list[np.ndarray]) -> list[list[DetectedFace]]:
        h, w = frames[0].shape[:2]
        small_w, small_h = max(1, round(w * self.detect_scale)), max(1, round(h * self.detect_scale))
        small = frames if (small_w, small_h) == (w, h) else [self._downscale(f, (small_w, small_h)) for f in frames]
        batch = torch.from_numpy(np.stack(small)).to(self.device)
        with torch.inference_mode():
            boxes, probs, points = self.mtcnn.detect(batch, landmarks=True)
        to_frame = np.array([w / small_w, h / small_h])  # detector pixels -> frame pixels, per axis
        s = self.settings
        out: list[list[DetectedFace]] = []
        for frame, frame_boxes, frame_probs, frame_points in zip(frames, boxes, probs, points):
            faces: list[DetectedFace] = []
            if frame_boxes is not None:
                frame_boxes = np.asarray(frame_boxes, dtype=np.float64).reshape(-1, 2, 2) * to_frame
                frame_boxes = frame_boxes.reshape(-1, 4)
                frame_probs = np.asarray(frame_probs, dtype=np.float64).reshape(-1)
                frame_points = np.asarray(frame_points, dtype=np.float64).reshape(-1, 5, 2) * to_frame
                for box, prob, pts in zip(frame_boxes, frame_probs, frame_points):
                    if prob < s.min_prob or min(box[2] - box[0], box[3] - box[1]) < s.min_face_px:
                        continue
                    crop = crop_face(frame, box, s.crop_size, s.crop_margin)
                    if crop is None:
                        continue
                    faces.append(DetectedFace(
                        box=tuple(float(v) for v in box),
                        landmarks=[(float(x), float(y)) for x, y in pts],
                        prob=float(prob),
                        crop=crop,
                    ))
            out.append(faces)
        return out
