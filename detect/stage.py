"""The detect stage: frames in, one FaceEvent per detected face out.

Each face's aligned crop travels inline (small); the whole frame and the crop
are also written to S3 under the evidence bucket's ``transient/`` prefix, so
an alert can point at them without frames ever passing through match.
"""

from __future__ import annotations

from detect.model import FaceDetector
from runtime.device import device_from_settings
from runtime.imaging import decode_jpeg, encode_jpeg
from runtime.stream import BadEvent, StreamProcessor
from schemas.events import Box, FaceEvent, FrameEvent
from schemas.topics import FACES, FRAMES
from storage.objects import ObjectNotFound, ObjectStore, evidence_key

CROP_JPEG_QUALITY = 95


class DetectProcessor(StreamProcessor):
    name = "detect"
    source = FRAMES
    outputs = (FACES,)

    @property
    def batch_size(self) -> int:
        return self.settings.detect.batch_size

    @property
    def batch_wait_s(self) -> float:
        return self.settings.detect.batch_wait_s

    def start(self) -> None:
        self.detector = FaceDetector(self.settings.detect, device_from_settings(self.settings.models))
        self.store = ObjectStore(self.settings.s3)
        self.store.ensure_buckets()

    def _frame_jpeg(self, frame: FrameEvent) -> bytes:
        if frame.image_jpeg is not None:
            return frame.image_jpeg
        if frame.image_key is not None:
            try:
                return self.store.get_bytes(self.settings.s3.frames_bucket, frame.image_key)
            except ObjectNotFound as exc:
                raise BadEvent(f"frame {frame.event_id}: {exc}") from exc
        raise BadEvent(f"frame {frame.event_id} carries neither image_jpeg nor image_key")

    def process(self, frames: list[FrameEvent]) -> list[tuple]:
        jpegs = [self._frame_jpeg(frame) for frame in frames]
        images = []
        for frame, data in zip(frames, jpegs):
            try:
                images.append(decode_jpeg(data))
            except Exception as exc:  # noqa: BLE001 - any decoder failure means a bad frame
                raise BadEvent(f"frame {frame.event_id} of camera {frame.camera_id}: undecodable JPEG ({exc})") from exc
        outputs = []
        bucket = self.settings.s3.evidence_bucket
        for frame, data, faces in zip(frames, jpegs, self.detector.detect(images)):
            if not faces:
                continue
            snapshot_key = evidence_key("transient", frame.camera_id, frame.source_ts, f"{frame.event_id}.jpg")
            self.store.put_bytes(bucket, snapshot_key, data, "image/jpeg")
            for index, face in enumerate(faces):
                crop = encode_jpeg(face.crop, CROP_JPEG_QUALITY)
                crop_key = evidence_key("transient", frame.camera_id, frame.source_ts, f"{frame.event_id}-{index}.jpg")
                self.store.put_bytes(bucket, crop_key, crop, "image/jpeg")
                outputs.append((FACES, FaceEvent(
                    event_id=f"{frame.event_id}-f{index}",
                    camera_id=frame.camera_id,
                    source_ts=frame.source_ts,
                    trace_id=frame.trace_id,
                    run_id=frame.run_id,
                    frame_event_id=frame.event_id,
                    face_index=index,
                    box=Box(x1=face.box[0], y1=face.box[1], x2=face.box[2], y2=face.box[3]),
                    landmarks=[tuple(p) for p in face.landmarks],
                    det_prob=min(1.0, float(face.prob)),
                    crop_jpeg=crop,
                    crop_key=crop_key,
                    snapshot_key=snapshot_key,
                    frame_width=frame.width,
                    frame_height=frame.height,
                )))
        return outputs
