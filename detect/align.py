"""Landmark alignment: a similarity transform of MTCNN's 5 points onto a template.

The shipped crop (``detect.model.crop_face``) is the MTCNN box widened by a
margin and resized, with no rotation: what the FaceNet 20180408 weights were
trained on. This module is the alternative that ArcFace-style pipelines use:
estimate the least-squares similarity transform (rotation, uniform scale,
translation; Umeyama 1991) that maps the five landmarks (left eye, right eye,
nose, left mouth corner, right mouth corner, in image coordinates) onto a
canonical template, and warp the photo with it. ``bench.accuracy`` compares
the two on the face-pairs set (BENCHMARKS.md, "Alignment"). The pipeline does
not use this module: only the benchmark (and its test) imports it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# InsightFace/ArcFace's canonical 5 points for a 112 x 112 crop (x, y): left eye,
# right eye, nose tip, left mouth corner, right mouth corner ("left" = image left).
ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)


def arcface_template(size: int = 160) -> np.ndarray:
    """The ArcFace template scaled to a ``size`` x ``size`` crop (a tight face crop, chin at the edge)."""
    return ARCFACE_TEMPLATE_112 * (size / 112.0)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform ``dst ~= s * R @ src + t`` (Umeyama 1991), no reflection.

    ``src`` and ``dst`` are (n, 2) point sets, n >= 2. Returns the 2 x 3 matrix ``[s*R | t]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"expected two (n, 2) point sets with n >= 2, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc ** 2).sum() / len(src)
    if var_s <= 0:
        raise ValueError("source points are all the same point")
    cov = dc.T @ sc / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # the best orthogonal map is a reflection: forbid it
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def _invert(m: np.ndarray) -> np.ndarray:
    a = m[:, :2]
    a_inv = np.linalg.inv(a)
    return np.hstack([a_inv, (-a_inv @ m[:, 2])[:, None]])


def align_face(image: np.ndarray, landmarks, template: np.ndarray | None = None, size: int = 160) -> np.ndarray:
    """RGB uint8 (size, size, 3) crop of ``image`` warped so that ``landmarks`` (5 x (x, y)) land on ``template``.

    ``template`` is in output pixels (default: ``arcface_template(size)``). Pixels
    that fall outside the photo are black. When the face is much larger than the
    crop, the photo region is first downscaled with Pillow's antialiasing resize,
    so the warp does not alias (the shipped box crop is antialiased the same way).
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError("expected an RGB uint8 array (H, W, 3)")
    src = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    dst = arcface_template(size) if template is None else np.asarray(template, dtype=np.float64)
    if src.shape != dst.shape:
        raise ValueError(f"landmarks {src.shape} and template {dst.shape} differ")
    m = umeyama(src, dst)  # image -> crop
    inv = _invert(m)  # crop -> image
    # The image region the crop sees, with a little slack for the bilinear kernel.
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
    seen = corners @ inv.T
    h, w = image.shape[:2]
    x0 = int(np.clip(np.floor(seen[:, 0].min()) - 2, 0, w))
    y0 = int(np.clip(np.floor(seen[:, 1].min()) - 2, 0, h))
    x1 = int(np.clip(np.ceil(seen[:, 0].max()) + 2, 0, w))
    y1 = int(np.clip(np.ceil(seen[:, 1].max()) + 2, 0, h))
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), np.uint8)
    region = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    offset = np.array([x0, y0], dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    fx = fy = 1.0
    if scale < 0.5:  # downscale first (antialiased), then warp at about 1:1
        new_w = max(1, round(region.width * scale))
        new_h = max(1, round(region.height * scale))
        fx, fy = new_w / region.width, new_h / region.height
        region = region.resize((new_w, new_h), Image.BILINEAR)
    pts = (src - offset) * np.array([fx, fy])
    m = umeyama(pts, dst)
    inv = _invert(m)
    warped = region.transform((size, size), Image.AFFINE, tuple(inv.reshape(-1)), resample=Image.BILINEAR, fillcolor=(0, 0, 0))
    return np.array(warped, dtype=np.uint8)  # a writable copy (torch.from_numpy warns on read-only arrays)


def landmarks_in_crop(landmarks, box, frame_w: int, frame_h: int, crop_size: int = 160, margin: int = 32) -> np.ndarray | None:
    """Where ``landmarks`` fall in the shipped box+margin crop (crop pixels), or None when the crop is clipped by the frame.

    The mean over many faces is a template with the geometry the FaceNet weights
    were trained on (box + margin), minus the in-plane rotation.
    """
    from detect.model import crop_box

    x1, y1, x2, y2 = crop_box(box, frame_w, frame_h, crop_size, margin)
    bx1, by1, bx2, by2 = (float(v) for v in box)
    mx = margin * (bx2 - bx1) / (crop_size - margin)
    my = margin * (by2 - by1) / (crop_size - margin)
    unclipped = (int(bx1 - mx / 2), int(by1 - my / 2), int(bx2 + mx / 2), int(by2 + my / 2))
    if (x1, y1, x2, y2) != unclipped or x2 <= x1 or y2 <= y1:
        return None
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    return (pts - [x1, y1]) * [crop_size / (x2 - x1), crop_size / (y2 - y1)]
