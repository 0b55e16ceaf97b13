"""Frames inline in Kafka vs by reference in S3 (claim-check): what each costs per frame.

    python -m bench.transport [--frames 200] [--width 960]

Starts a local stack, then for the same JPEG frames measures, per frame:
producing to the frames topic with the image inline; putting the JPEG in S3 and
producing only its key; and, on the reading side, getting the image back
(parse the event, or parse it and GET the object). Prints a table; the
architecture doc's choice of inline frames rests on it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from runtime.imaging import encode_jpeg


def frames_jpeg(n: int, width: int) -> list[bytes]:
    """Natural-looking frames: smooth gradients, texture and noise (JPEG size near a camera's)."""
    height = width * 9 // 16
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for i in range(n):
        base = ((xx + 3 * i) % 255 * 0.6 + (yy % 200) * 0.4).astype(np.float32)
        image = np.stack([base, np.roll(base, i, axis=1), base[::-1]], axis=-1)
        image += rng.normal(0, 12, image.shape)
        out.append(encode_jpeg(np.clip(image, 0, 255).astype(np.uint8), 90))
    return out


def measure(n: int, width: int) -> list[tuple[str, float, float]]:
    from runtime.kafka import EventProducer, EventReader, ensure_topics
    from runtime.settings import load_settings
    from schemas.events import FrameEvent, utc_now
    from schemas.topics import FRAMES
    from storage.objects import ObjectStore
    from localstack.stack import running_stack

    jpegs = frames_jpeg(n, width)
    with tempfile.TemporaryDirectory() as home, running_stack(Path(home)) as info:
        os.environ["VIGIL_CONFIG"] = str(info["config"])
        settings = load_settings()
        ensure_topics(settings.kafka)
        store = ObjectStore(settings.s3)
        store.ensure_buckets()
        producer = EventProducer(settings.kafka)
        bucket = settings.s3.frames_bucket

        def event(i: int, **image) -> FrameEvent:
            return FrameEvent(camera_id=f"bench-{mode}", source_ts=utc_now(), trace_id="t", frame_index=i, width=width, height=width * 9 // 16, **image)

        results = []
        for mode in ("inline", "s3"):
            t0 = time.perf_counter()
            for i, data in enumerate(jpegs):
                if mode == "inline":
                    producer.send(FRAMES, event(i, image_jpeg=data))
                else:
                    key = f"bench/{uuid.uuid4().hex}.jpg"
                    store.put_bytes(bucket, key, data, "image/jpeg")
                    producer.send(FRAMES, event(i, image_key=key))
            producer.flush()
            publish_ms = (time.perf_counter() - t0) * 1000 / n

            with EventReader(settings.kafka, FRAMES) as reader:
                t0, got = time.perf_counter(), 0
                for read in reader.follow(idle_timeout_s=2):
                    if read.event is None or read.event.camera_id != f"bench-{mode}":
                        continue
                    image = read.event.image_jpeg if mode == "inline" else store.get_bytes(bucket, read.event.image_key)
                    got += bool(image)
                    if got == n:
                        break
                read_ms = (time.perf_counter() - t0) * 1000 / n
            results.append((mode, publish_ms, read_ms))
        producer.close()
    return results, statistics.mean(len(j) for j in jpegs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--width", type=int, default=960)
    args = parser.parse_args()
    print(f"# frame transport, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    results, mean_size = measure(args.frames, args.width)
    print(f"{args.frames} frames {args.width}x{args.width * 9 // 16}, JPEG q90 mean {mean_size / 1024:.0f} KiB")
    print(f"| {'transport':<10} | {'publish ms/frame':>16} | {'read ms/frame':>13} | {'total':>6} |")
    print(f"|{'-' * 12}|{'-' * 18}|{'-' * 15}|{'-' * 8}|")
    for mode, publish_ms, read_ms in results:
        print(f"| {mode:<10} | {publish_ms:>16.2f} | {read_ms:>13.2f} | {publish_ms + read_ms:>6.2f} |")
    inline, s3 = results[0], results[1]
    print(f"ratio s3/inline total={(s3[1] + s3[2]) / (inline[1] + inline[2]):.2f}")


if __name__ == "__main__":
    main()
