"""Synthetic footage with a ground truth we control (the demo, tests and benchmarks).

``make_footage`` composites real face photos (the face-pairs dataset in
``tests/data/face-pairs``) onto plain or gradient backgrounds, moves each across the frame
over its scene, and encodes H.264 (libx264, yuv420p, GOP = fps) with PyAV.
The returned ``FootageTruth`` says which identity is on screen in which frames
and where (the pasted photo's box per frame). Same inputs and seed, same
pixels; the MP4 is written with its index first (``faststart``), so a
truncated copy still opens and decodes up to the cut.

The dataset is part of the repository: ``tests/data/face-pairs`` (see tests/data/README.md).
"""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import av
import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]


def face_pairs_dir() -> Path:
    """The face-pairs dataset, in the repository."""
    return REPO / "tests" / "data" / "face-pairs"


def identities(root: Path | None = None) -> dict[str, list[Path]]:
    """identity -> photos, from face-pairs' identities.csv."""
    root = root or face_pairs_dir()
    out: dict[str, list[Path]] = {}
    with open(root / "identities.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["identity"], []).append(root / row["file"])
    return out


@dataclass(frozen=True)
class Scene:
    """One identity on screen for ``n_frames``; ``photo=None`` gives an empty background (no face)."""

    photo: Path | str | None
    n_frames: int
    label: str | None
    height_fraction: tuple[float, float] = (0.45, 0.60)  # photo height over frame height, drawn per scene


@dataclass(frozen=True)
class SceneTruth:
    label: str | None
    photo: str | None  # file name only
    first_frame: int  # inclusive
    end_frame: int  # exclusive
    start_s: float  # PTS of first_frame
    end_s: float  # PTS of end_frame (exclusive)
    boxes: tuple[tuple[int, int, int, int], ...]  # (x1, y1, x2, y2) of the pasted photo, one per frame

    def box_at(self, frame_index: int) -> tuple[int, int, int, int] | None:
        if self.first_frame <= frame_index < self.end_frame:
            return self.boxes[frame_index - self.first_frame] if self.boxes else None
        return None


@dataclass(frozen=True)
class FootageTruth:
    path: Path
    fps: int
    width: int
    height: int
    n_frames: int
    scenes: tuple[SceneTruth, ...]

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps

    def scene_at_frame(self, frame_index: int) -> SceneTruth | None:
        for scene in self.scenes:
            if scene.first_frame <= frame_index < scene.end_frame:
                return scene
        return None

    def label_at_frame(self, frame_index: int) -> str | None:
        scene = self.scene_at_frame(frame_index)
        return scene.label if scene else None

    def label_at(self, pts_s: float) -> str | None:
        """Identity on screen at presentation time ``pts_s`` (seconds from the start)."""
        return self.label_at_frame(int(math.floor(pts_s * self.fps + 1e-6)))

    def to_json(self) -> str:
        data = asdict(self)
        data["path"] = self.path.name
        return json.dumps(data, indent=1)


def _background(rng: random.Random, width: int, height: int) -> np.ndarray:
    c1 = np.array([rng.randrange(30, 226) for _ in range(3)], dtype=np.float32)
    if rng.random() < 0.3:  # plain
        return np.broadcast_to(c1.astype(np.uint8), (height, width, 3)).copy()
    c2 = np.array([rng.randrange(30, 226) for _ in range(3)], dtype=np.float32)
    if rng.random() < 0.5:
        t = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    else:
        t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    grad = c1 + (c2 - c1) * t
    return np.broadcast_to(grad, (height, width, 3)).astype(np.uint8)


def _load_photo(path: Path, target_h: int, max_w: int) -> np.ndarray:
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        scale = min(target_h / img.height, max_w / img.width)
        size = (max(2, round(img.width * scale)), max(2, round(img.height * scale)))
        return np.asarray(img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0), dtype=np.uint8)


def _scene_frames(scene: Scene, rng: random.Random, width: int, height: int):
    """Yield (rgb frame, box) for each frame of one scene."""
    bg = _background(rng, width, height)
    if scene.photo is None:
        for _ in range(scene.n_frames):
            yield bg, None
        return
    photo = _load_photo(Path(scene.photo), round(height * rng.uniform(*scene.height_fraction)), round(width * 0.7))
    ph, pw = photo.shape[:2]
    span_x = width - pw
    x_from, x_to = (0.05 * span_x, 0.95 * span_x)
    if rng.random() < 0.5:
        x_from, x_to = x_to, x_from
    y_mid = (height - ph) / 2
    bob = min(0.06 * height, y_mid)
    phase = rng.uniform(0, 2 * math.pi)
    n = scene.n_frames
    for i in range(n):
        t = i / (n - 1) if n > 1 else 0.5
        ease = t * t * (3 - 2 * t)  # smoothstep: start and stop gently
        x = round(x_from + (x_to - x_from) * ease)
        y = round(y_mid + bob * math.sin(phase + 2 * math.pi * t))
        frame = bg.copy()
        frame[y:y + ph, x:x + pw] = photo
        yield frame, (x, y, x + pw, y + ph)


def _encode(out_path: Path, frames: Iterable[np.ndarray], *, fps: int, width: int, height: int,
            pts_s: Sequence[float] | None = None, crf: int = 23, preset: str = "veryfast") -> int:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    container_opts = {"movflags": "+faststart"} if out_path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
    out = av.open(str(out_path), "w", options=container_opts)
    try:
        stream = out.add_stream("libx264", rate=fps, options={"preset": preset, "crf": str(crf), "g": str(fps),
                                                              "keyint_min": str(fps)})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        time_base = Fraction(1, 1000) if pts_s is not None else Fraction(1, fps)
        stream.codec_context.time_base = time_base
        n = 0
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = round(pts_s[i] * 1000) if pts_s is not None else i
            frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
            n += 1
        for packet in stream.encode():
            out.mux(packet)
    finally:
        out.close()
    return n


def make_footage(out_path: Path | str, scenes: list[Scene], *, fps: int = 10, size: tuple[int, int] = (960, 540),
                 seed: int = 0) -> FootageTruth:
    """Encode the scenes one after another into ``out_path`` (H.264); return the ground truth."""
    out_path = Path(out_path)
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"size must be even for yuv420p, got {size}")
    truths: list[SceneTruth] = []
    boxes_per_scene: list[list] = [[] for _ in scenes]

    def frames():
        for k, scene in enumerate(scenes):
            rng = random.Random(f"{seed}:{k}")
            for rgb, box in _scene_frames(scene, rng, width, height):
                boxes_per_scene[k].append(box)
                yield rgb

    n = _encode(out_path, frames(), fps=fps, width=width, height=height)
    first = 0
    for k, scene in enumerate(scenes):
        end = first + scene.n_frames
        boxes = tuple(b for b in boxes_per_scene[k] if b is not None)
        truths.append(SceneTruth(label=scene.label, photo=Path(scene.photo).name if scene.photo else None,
                                 first_frame=first, end_frame=end, start_s=first / fps, end_s=end / fps, boxes=boxes))
        first = end
    return FootageTruth(path=out_path, fps=fps, width=width, height=height, n_frames=n, scenes=tuple(truths))


def make_pattern_clip(out_path: Path | str, *, n_frames: int = 100, fps: int = 10, size: tuple[int, int] = (320, 240),
                      frame_times: Sequence[float] | None = None, seed: int = 0) -> Path:
    """A moving test pattern (no faces), for decode and timing tests.

    ``frame_times`` (seconds, increasing) makes a variable-frame-rate clip with those PTS.
    """
    out_path = Path(out_path)
    width, height = size
    if frame_times is not None:
        n_frames = len(frame_times)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # A still "scene" (smooth gradients, a checkerboard, fine static texture) ...
    base = np.empty((height, width, 3), np.float32)
    base[..., 0] = 60 + 120 * xx / width
    base[..., 1] = 60 + 120 * yy / height
    base[..., 2] = 90 + 60 * (((xx // 32) + (yy // 32)) % 2)
    base += rng.normal(0, 4, size=(height, width, 1)).astype(np.float32)
    base = np.clip(base, 0, 255).astype(np.uint8)
    side = max(8, height // 6)

    def frames():
        for i in range(n_frames):
            img = base.copy()
            # ... with two moving blocks (one per frame index, so the frame is identifiable) ...
            x = int((i * 7) % max(1, width - side))
            y = int((height - side) / 2 + (height - side) / 3 * math.sin(i / 5))
            img[y:y + side, x:x + side] = (230, 40, 40)
            x2 = int(width - side - (i * 3) % max(1, width - side))
            img[: side // 2, x2:x2 + side // 2] = (20, 20, 20)
            yield img

    _encode(out_path, frames(), fps=fps, width=width, height=height, pts_s=frame_times)
    return out_path


def make_corrupt_copy(src: Path | str, dst: Path | str, *, mode: str = "truncate", at: float = 0.5,
                      seed: int = 0, offset: int | None = None) -> Path:
    """Write a damaged copy of ``src``.

    ``mode``: ``truncate`` keeps the first ``at`` of the bytes; ``garble``
    overwrites 2% of the file (at least 4 KiB) with random bytes starting at
    ``at`` (or at byte ``offset``); ``both`` garbles then truncates further
    on, at ``(1 + at) / 2``. H.264 decoders conceal much damage silently: to
    be sure of a decode error, garble a keyframe (``offset`` = its packet's
    ``pos``, see ``keyframe_offsets``).
    """
    data = bytearray(Path(src).read_bytes())
    rng = random.Random(seed)
    if mode in ("garble", "both"):
        start = int(len(data) * at) if offset is None else offset
        span = max(4096, len(data) // 50)
        for off in range(start, min(len(data), start + span)):
            data[off] = rng.randrange(256)
    if mode == "truncate":
        data = data[: int(len(data) * at)]
    elif mode == "both":
        data = data[: int(len(data) * (1 + at) / 2)]
    elif mode != "garble":
        raise ValueError(f"mode must be truncate, garble or both, got {mode!r}")
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst


def keyframe_offsets(path: Path | str) -> list[tuple[float, int]]:
    """(PTS in seconds, byte offset in the file) of every keyframe packet."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(float(p.pts * p.time_base), p.pos) for p in container.demux(stream)
                if p.is_keyframe and p.pts is not None and p.pos is not None and p.pos >= 0]


def default_scenes(n_identities: int = 3, frames_per_scene: int = 30, *, gap_frames: int = 0) -> list[Scene]:
    """One photo each of the first ``n_identities`` identities of face-pairs."""
    scenes: list[Scene] = []
    for label, photos in sorted(identities().items())[:n_identities]:
        if gap_frames and scenes:
            scenes.append(Scene(None, gap_frames, None))
        scenes.append(Scene(photos[0], frames_per_scene, label))
    return scenes


def sample_clip(scenes_dir: Path, out_path: Path, *, frames_per_photo: int = 20, fps: int = 10) -> FootageTruth:
    """The demo's clip: each photo in ``scenes_dir`` (sorted by name) on screen in turn."""
    photos = sorted(p for p in Path(scenes_dir).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not photos:
        raise SystemExit(f"no photos in {scenes_dir}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return make_footage(out_path, [Scene(p, frames_per_photo, p.stem, (0.9, 0.95)) for p in photos], fps=fps, size=(960, 540))


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "sample":
        raise SystemExit("usage: python -m synthetic.footage sample SCENES_DIR OUT.mp4")
    truth = sample_clip(Path(sys.argv[2]), Path(sys.argv[3]))
    print(f"{truth.path}: {truth.n_frames} frames, scenes {[s.label for s in truth.scenes]}")
