"""Frames inline in Kafka vs by reference in S3 (claim-check), and what producer compression gains on each topic.

    python -m bench.transport [--frames 200] [--width 960]
    python -m bench.transport --codecs [--batch 16]

Transport: starts a local stack, then for the same JPEG frames measures, per
frame: producing to the frames topic with the image inline; putting the JPEG in
S3 and producing only its key; and, on the reading side, getting the image back
(parse the event, or parse it and GET the object). The architecture doc's choice
of inline frames rests on it.

Codecs (no stack): each topic's payload as the stages build it (frames inline
and by reference, faces with a real face crop, embeddings, alerts), ``--batch``
of them compressed together as a producer batch is, by kafka-python's codec of
every installed compression type: compressed size and CPU time per event. The
``kafka.compression`` setting rests on it.
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
from PIL import Image

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


def topic_payloads(width: int, n: int) -> dict[str, list[bytes]]:
    """``n`` different encoded events per topic, as the stages build them: frames of the transport bench, crops of
    real faces (face-pairs photos), random unit vectors in FaceNet's shape, fresh ids."""
    from detect.stage import CROP_JPEG_QUALITY
    from runtime.imaging import decode_jpeg
    from schemas.events import AlertEvent, EmbeddingEvent, FaceEvent, FrameEvent, utc_now
    from schemas.topics import TopicSpec
    from synthetic.footage import identities

    rng = np.random.default_rng(0)
    photos = [path for paths in identities().values() for path in paths]
    height = width * 9 // 16
    frames = frames_jpeg(n, width)
    payloads: dict[str, list[bytes]] = {}

    def add(topic: str, event) -> None:
        payloads.setdefault(topic, []).append(TopicSpec.encode(event))

    for i in range(n):
        face = decode_jpeg(photos[i % len(photos)].read_bytes())
        side = min(face.shape[:2])
        crop = np.asarray(Image.fromarray(face[:side, :side]).resize((160, 160)))
        vector = rng.normal(size=512).astype(np.float32)
        vector /= np.linalg.norm(vector)
        x, y = rng.uniform(0, width - 200), rng.uniform(0, height - 200)
        box = {"x1": x, "y1": y, "x2": x + rng.uniform(40, 200), "y2": y + rng.uniform(40, 200)}
        common = {"camera_id": "cam-lobby-1", "source_ts": utc_now(), "trace_id": uuid.uuid4().hex}
        keys = {"crop_key": f"transient/cam-lobby-1/2026/11/30/10/{uuid.uuid4().hex}-crop.jpg",
                "snapshot_key": f"transient/cam-lobby-1/2026/11/30/10/{uuid.uuid4().hex}.jpg"}
        score = float(rng.uniform(0.5, 0.9))
        add("frames (inline JPEG)", FrameEvent(**common, frame_index=i, width=width, height=height, image_jpeg=frames[i]))
        add("frames (S3 key)", FrameEvent(**common, frame_index=i, width=width, height=height,
                                          image_key=f"frames/cam-lobby-1/{uuid.uuid4().hex}.jpg"))
        add("faces", FaceEvent(**common, frame_event_id=uuid.uuid4().hex, face_index=0, box=box,
                               landmarks=[tuple(rng.uniform(0, width, 2)) for _ in range(5)], det_prob=float(rng.uniform(0.95, 1)),
                               crop_jpeg=encode_jpeg(crop, CROP_JPEG_QUALITY), frame_width=width, frame_height=height,
                               quality=float(rng.uniform(0, 1)), **keys))
        add("embeddings", EmbeddingEvent(**common, face_event_id=uuid.uuid4().hex, frame_event_id=uuid.uuid4().hex, face_index=0,
                                         box=box, det_prob=float(rng.uniform(0.95, 1)), model="facenet-vggface2-3a6d",
                                         embedding=vector.tolist(), quality=float(rng.uniform(0, 1)), **keys))
        add("alerts", AlertEvent(**common, alert_id=uuid.uuid4().hex, person_id=f"person-{i}", score=score, threshold=0.5,
                                 face_event_id=uuid.uuid4().hex, box=box, model="facenet-vggface2-3a6d", track_id=uuid.uuid4().hex,
                                 track_score=score - 0.02, track_faces=int(rng.integers(2, 20)), **keys))
    return payloads


def measure_codecs(width: int, batch: int) -> tuple[list[list[str]], list[str]]:
    """Per topic and installed codec: bytes per event before and after, and compress + decompress CPU per event."""
    from kafka import codec

    codecs = {"gzip": (codec.has_gzip, codec.gzip_encode, codec.gzip_decode),
              "snappy": (codec.has_snappy, codec.snappy_encode, codec.snappy_decode),
              "lz4": (codec.has_lz4, codec.lz4_encode, codec.lz4_decode),
              "zstd": (codec.has_zstd, codec.zstd_encode, codec.zstd_decode)}
    installed = {name: (enc, dec) for name, (has, enc, dec) in codecs.items() if has()}
    rows = []
    for topic, payloads in topic_payloads(width, batch).items():
        data = b"".join(payloads)  # one producer batch: a camera's consecutive events, each different
        size = f"{len(data) / batch:,.0f}"
        rows.append([topic, size, "none", size, "1.00", "0"])
        for name, (encode, decode) in installed.items():
            runs, t0 = 0, time.perf_counter()
            while runs < 5 or time.perf_counter() - t0 < 0.5:
                packed = encode(data)
                decode(packed)
                runs += 1
            us = (time.perf_counter() - t0) / runs / batch * 1e6
            rows.append([topic, size, name, f"{len(packed) / batch:,.0f}", f"{len(data) / len(packed):.2f}", f"{us:.0f}"])
    return rows, sorted(set(codecs) - set(installed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--codecs", action="store_true", help="measure producer compression per topic instead (no stack)")
    parser.add_argument("--batch", type=int, default=16, help="events per producer batch for --codecs")
    args = parser.parse_args()
    if args.codecs:
        from bench.common import machine, markdown_table

        info = machine()
        print(f"# producer compression per topic, {info['date']}, {info['cpu']}, {info['cores']} cores, load {info['load_avg']}, commit {info['commit']}")
        rows, missing = measure_codecs(args.width, args.batch)
        print(f"batches of {args.batch} events; CPU is compress + decompress per event; codecs not installed: {', '.join(missing) or 'none'}")
        print(markdown_table(["topic", "bytes/event", "codec", "compressed bytes/event", "ratio", "CPU us/event"], rows))
        return
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
