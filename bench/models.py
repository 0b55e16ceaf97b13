"""Model throughput: MTCNN frames/s per frame size, FaceNet faces/s per batch size.

    python -m bench.models [--threads 2] [--sizes 640x480,1280x720] [--min-time 3]

Runs on the device ``runtime.device`` picks (``models.device``: CUDA when
available, else the CPU), under ``torch.inference_mode()``, with the
project's ``DetectSettings`` defaults.

- **detect**: ``FaceDetector.detect`` on frames of each size, each a
  face-pairs photo pasted at half the frame height on a grey background:
  one face per frame, as the footage has. Batches of 1 and of
  ``detect.batch_size`` frames (the stage's batch). Includes the crops
  (``crop_face``), as the stage does.
- **embed**: ``FaceEmbedder.embed`` on real 160x160 crops of those frames at
  batch 1, 8 and 32 (and 128 on a GPU).

Then each optimisation against the code without it, at batch 1 (and 8 for
embed), in alternating rounds: detect on the downscaled frame
(``detect.detect_face_px``) against full-resolution MTCNN input, and
channels-last against contiguous (NCHW) weights for MTCNN and FaceNet.

Each row: median and p90 seconds per call over at least ``--min-time``
seconds (and 5 calls) after a warm-up call; ``per s`` = items / median.
``--threads`` takes a list (e.g. ``1,2``) to compare torch CPU thread counts.
On a CPU-only machine the GPU rows say so rather than disappear.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from bench.common import machine, print_machine, print_tables, timed_runs

DETECT_SIZES = ((640, 480), (1280, 720))
EMBED_BATCHES_CPU = (1, 8, 32)
EMBED_BATCHES_GPU = (1, 8, 32, 128)
NO_GPU = "not measured (no GPU in this session)"


@dataclass
class Row:
    model: str
    device: str
    threads: int | None
    input: str
    batch: int
    median_s: float | None
    p90_s: float | None
    runs: int
    note: str = ""

    @property
    def per_item_ms(self) -> float | None:
        return None if self.median_s is None else self.median_s / self.batch * 1000

    @property
    def per_s(self) -> float | None:
        return None if self.median_s is None else self.batch / self.median_s


def bench_photos() -> list[Path]:
    """A few face photos: the first photo of each of the first six face-pairs identities."""
    from synthetic.footage import identities

    return [photos[0] for _, photos in sorted(identities().items())][:6]


def synth_frame(photo: Path, size: tuple[int, int], face_fraction: float = 0.5) -> np.ndarray:
    """``photo`` scaled to ``face_fraction`` of the frame height, centred on grey: RGB uint8 (H, W, 3)."""
    width, height = size
    with Image.open(photo) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        scale = min(height * face_fraction / img.height, width * 0.7 / img.width)
        img = img.resize((max(2, round(img.width * scale)), max(2, round(img.height * scale))), Image.BILINEAR)
        canvas = Image.new("RGB", (width, height), (120, 120, 120))
        canvas.paste(img, ((width - img.width) // 2, (height - img.height) // 2))
        return np.asarray(canvas, dtype=np.uint8).copy()


def run(
    *,
    device: torch.device,
    threads: int | None,
    sizes=DETECT_SIZES,
    detect_batches: tuple[int, ...] | None = None,
    embed_batches: tuple[int, ...] | None = None,
    min_time_s: float = 3.0,
    min_runs: int = 5,
    photos: list[Path] | None = None,
    weights_dir: Path | None = None,
) -> list[Row]:
    """Measure on ``device`` with ``threads`` torch CPU threads; return the rows (see the module doc)."""
    from detect.model import FaceDetector
    from embed.model import FaceEmbedder
    from runtime.device import apply_torch_threads
    from runtime.settings import DetectSettings, ModelSettings

    apply_torch_threads(threads)
    used_threads = torch.get_num_threads()
    photos = photos or bench_photos()
    dev = str(device)
    rows: list[Row] = []
    crops: list[np.ndarray] = []
    defaults = DetectSettings()
    detect_batches = detect_batches or tuple(sorted({1, defaults.batch_size}))
    for batch in detect_batches:
        detector = FaceDetector(defaults.model_copy(update={"batch_size": batch}), device)
        for size in sizes:
            frames = [synth_frame(photos[i % len(photos)], size) for i in range(batch)]
            found = detector.detect(frames)
            crops += [face.crop for faces in found for face in faces]
            n_faces = sum(len(f) for f in found)
            times = timed_runs(lambda: detector.detect(frames), min_time_s=min_time_s, min_runs=min_runs)
            rows.append(Row("detect (MTCNN)", dev, used_threads, f"{size[0]}x{size[1]}", batch,
                            float(np.median(times)), float(np.percentile(times, 90)), len(times),
                            f"{n_faces} face(s) found in {batch} frame(s)"))
    if not crops:
        raise SystemExit("the detector found no face in the bench frames")
    embedder = FaceEmbedder(weights_dir or ModelSettings().weights_dir, device)
    for batch in embed_batches or (EMBED_BATCHES_GPU if device.type == "cuda" else EMBED_BATCHES_CPU):
        batch_crops = [crops[i % len(crops)] for i in range(batch)]
        embedder.batch_size = batch
        times = timed_runs(lambda: embedder.embed(batch_crops), min_time_s=min_time_s, min_runs=min_runs)
        rows.append(Row("embed (InceptionResnetV1)", dev, used_threads, "160x160 crops", batch,
                        float(np.median(times)), float(np.percentile(times, 90)), len(times)))
    return rows


def ablations(*, device: torch.device, threads: int | None, size=(960, 540), rounds: int = 4, min_time_s: float = 1.0,
              photos: list[Path] | None = None, weights_dir: Path | None = None) -> list[Row]:
    """Each optimisation against the code without it, at batch 1, measured in alternating rounds
    (so that load from other processes falls on both sides alike)."""
    from detect.model import FaceDetector
    from embed.model import FaceEmbedder
    from runtime.device import apply_torch_threads
    from runtime.settings import DetectSettings, ModelSettings

    apply_torch_threads(threads)
    used_threads = torch.get_num_threads()
    photos = photos or bench_photos()
    frames = [synth_frame(photos[i % len(photos)], size) for i in range(len(photos))]
    defaults = DetectSettings()
    detectors = {
        "shipped: downscaled, channels-last": FaceDetector(defaults, device),
        "full-resolution MTCNN input": FaceDetector(defaults.model_copy(update={"detect_face_px": defaults.min_face_px}), device),
        "contiguous (NCHW) MTCNN": FaceDetector(defaults, device),
    }
    detectors["contiguous (NCHW) MTCNN"].mtcnn.to(memory_format=torch.contiguous_format)
    crops = [f.crop for faces in detectors["full-resolution MTCNN input"].detect(frames) for f in faces]
    weights_dir = weights_dir or ModelSettings().weights_dir
    embedders = {"shipped: channels-last": FaceEmbedder(weights_dir, device),
                 "contiguous (NCHW) FaceNet": FaceEmbedder(weights_dir, device)}
    embedders["contiguous (NCHW) FaceNet"].model.to(memory_format=torch.contiguous_format)
    cases = [(f"detect (MTCNN), {name}", f"{size[0]}x{size[1]}", 1, (lambda d=d, it=itertools.cycle(frames): d.detect([next(it)])))
             for name, d in detectors.items()]
    for batch in (1, 8):
        batch_crops = [crops[i % len(crops)] for i in range(batch)]
        cases += [(f"embed (InceptionResnetV1), {name}", "160x160 crops", batch, (lambda e=e, c=batch_crops: e.embed(c)))
                  for name, e in embedders.items()]
    times: dict[tuple[str, int], list[float]] = {(name, batch): [] for name, _input, batch, _fn in cases}
    for _ in range(rounds):
        for name, _input, batch, fn in cases:
            times[name, batch] += timed_runs(fn, min_time_s=min_time_s, min_runs=3)
    return [Row(name, str(device), used_threads, inp, batch, float(np.median(times[name, batch])),
                float(np.percentile(times[name, batch], 90)), len(times[name, batch]), f"{rounds} alternating rounds")
            for name, inp, batch, _fn in cases]


def gpu_placeholders(sizes=DETECT_SIZES, detect_batches=(1, 8)) -> list[Row]:
    rows = [Row("detect (MTCNN)", "cuda", None, f"{w}x{h}", b, None, None, 0, NO_GPU) for b in detect_batches for w, h in sizes]
    rows += [Row("embed (InceptionResnetV1)", "cuda", None, "160x160 crops", b, None, None, 0, NO_GPU) for b in EMBED_BATCHES_GPU]
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table_rows(rows: list[Row]) -> list[list[str]]:
    return [[r.model, r.device, str(r.threads or "-"), r.input, str(r.batch), _fmt(r.median_s and r.median_s * 1000, ".1f"),
             _fmt(r.p90_s and r.p90_s * 1000, ".1f"), _fmt(r.per_item_ms, ".1f"), _fmt(r.per_s, ".1f"), str(r.runs), r.note]
            for r in rows]


HEADER = ["model", "device", "threads", "input", "batch", "median ms/call", "p90 ms/call", "ms/item", "items/s", "runs", "note"]


def main(argv: list[str] | None = None) -> int:
    from runtime.device import pick_device
    from runtime.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="auto, cpu or cuda (default: models.device from the settings)")
    parser.add_argument("--threads", default=None,
                        help="torch CPU threads, a comma-separated list to compare (default: models.torch_threads, else torch's own)")
    parser.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in DETECT_SIZES), help="detector frame sizes")
    parser.add_argument("--min-time", type=float, default=3.0, help="seconds measured per row (default 3)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--skip-ablations", action="store_true", help="skip the with/without table of each optimisation")
    args = parser.parse_args(argv)

    settings = load_settings()
    torch_default_threads = torch.get_num_threads()
    device = pick_device(args.device or settings.models.device)
    thread_list = [int(t) for t in args.threads.split(",")] if args.threads else [settings.models.torch_threads]
    sizes = tuple(tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s)
    info = machine()
    print_machine(info, f"device {device}")
    rows: list[Row] = []
    for threads in thread_list:
        print(f"measuring on {device} with {threads or 'default'} torch threads ...", file=sys.stderr, flush=True)
        rows += run(device=device, threads=threads, sizes=sizes, min_time_s=args.min_time,
                    weights_dir=settings.models.weights_dir)
    if device.type != "cuda":
        rows += gpu_placeholders(sizes)
    print()
    print_tables(HEADER, table_rows(rows), args.markdown)
    if not args.skip_ablations:
        # One thread is what each stage process gets on a small machine; the other count is this run's.
        ab_threads = [1] + [t for t in [thread_list[-1] or torch_default_threads] if t != 1]
        print(f"\neach optimisation against the code without it ({device}; torch threads {ab_threads}) ...",
              file=sys.stderr, flush=True)
        ab = [row for t in ab_threads for row in ablations(device=device, threads=t, weights_dir=settings.models.weights_dir)]
        print()
        print_tables(HEADER, table_rows(ab), args.markdown)
    print(f"\nload avg at the end {machine()['load_avg']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
