"""The detect stage: frames in, one FaceEvent per detected face that passes the quality gate out.

Each face's crop (its box widened by a margin, see ``detect.model``) travels
inline (small); the whole frame and the crop are also written to S3 under the
evidence bucket's ``transient/`` prefix, so an alert can point at them without
frames ever passing through match. Match deletes those transient objects
once the face's track has ended (``match.stage``).

Only frames that an active deployment covers (camera, capture time, run:
``accountability.deployments``) are searched for faces; the others are
counted in ``vigil_frames_outside_deployments_total`` and dropped unread.

The quality gate (``detect.quality``, limits in ``DetectSettings`` with
per-camera overrides) rejects faces too small, too unlikely, too blurred or
turned too far to recognise. A rejected face is never silently dropped: it is
counted in ``vigil_faces_rejected_total{stage,camera,reason}`` and logged at
debug level. Faces smaller than the smallest limit of any camera are not
searched for at all (MTCNN's scale pyramid stops there), so they are not
counted either. Face indices (and so event ids) number every face the detector
found, rejected ones included, so they stay stable whatever the limits.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from accountability.deployments import DeploymentTable
from detect.model import FaceDetector
from detect.quality import quality_gate
from runtime.device import device_from_settings
from runtime.imaging import ImageTooLarge, decode_jpeg, encode_jpeg
from runtime.stream import BadEvent, StreamProcessor
from schemas.events import Box, FaceEvent, FrameEvent
from schemas.stages import DETECT
from schemas.topics import FACES
from storage.objects import ObjectNotFound, ObjectStore, evidence_key

CROP_JPEG_QUALITY = 95

log = logging.getLogger(__name__)

# Beside runtime.metrics' per-stage metrics, with the same conventions (vigil_ prefix, stage label).
FACES_REJECTED = Counter(
    "vigil_faces_rejected_total", "Faces the quality gate rejected, by camera and reason (small, low_prob, blurry, pose).",
    ["stage", "camera", "reason"],
)
OUTSIDE_DEPLOYMENTS = Counter("vigil_frames_outside_deployments_total", "Frames no active deployment covered, dropped unread.",
                              ["stage", "camera"])


class DetectProcessor(StreamProcessor):
    stage = DETECT

    def start(self) -> None:
        self.gate = quality_gate(self.settings.detect)
        # The detector returns every face MTCNN finds down to the smallest size any camera accepts; the gate
        # decides per camera (and counts what it rejects).
        detector_settings = self.settings.detect.model_copy(update={"min_prob": 0.0, "min_face_px": int(self.gate.min_face_px)})
        self.detector = FaceDetector(detector_settings, device_from_settings(self.settings.models))
        self.detector.warm_up()  # before /readyz turns ready
        self.store = ObjectStore(self.settings.s3)
        self.store.ensure_buckets()
        self.deployments = DeploymentTable(self.settings).start()

    def stop(self) -> None:
        if getattr(self, "deployments", None) is not None:
            self.deployments.stop()

    def _frame_jpeg(self, frame: FrameEvent) -> bytes:
        if frame.image_jpeg is not None:
            return frame.image_jpeg
        if frame.image_key is not None:
            try:
                return self.store.get_bytes(self.settings.s3.frames_bucket, frame.image_key)
            except ObjectNotFound as exc:
                raise BadEvent(f"frame {frame.event_id}: {exc}") from exc
        raise BadEvent(f"frame {frame.event_id} carries neither image_jpeg nor image_key")

    def _decode(self, frame: FrameEvent, data: bytes):
        """The frame's pixels; BadEvent for a frame over the caps (checked before decoding) or not a readable JPEG."""
        limits = self.settings.detect
        try:
            return decode_jpeg(data, max_pixels=limits.max_frame_pixels, max_bytes=limits.max_frame_bytes)
        except ImageTooLarge as exc:
            raise BadEvent(f"frame {frame.event_id} of camera {frame.camera_id}: over detect's limits ({exc})") from exc
        except Exception as exc:  # noqa: BLE001 - any decoder failure means a bad frame
            raise BadEvent(f"frame {frame.event_id} of camera {frame.camera_id}: undecodable JPEG ({exc})") from exc

    def process(self, frames: list[FrameEvent]) -> list[tuple]:
        covered = []
        for frame in frames:  # one pass: comparing frames (JPEG bytes and all) to pick them out again would be quadratic
            if self.deployments.covering(frame.camera_id, frame.source_ts, frame.run_id):
                covered.append(frame)
            else:
                OUTSIDE_DEPLOYMENTS.labels(self.name, frame.camera_id).inc()
        frames = covered
        jpegs = [self._frame_jpeg(frame) for frame in frames]
        images = [self._decode(frame, data) for frame, data in zip(frames, jpegs)]
        outputs, rejected = [], []
        bucket = self.settings.s3.evidence_bucket
        for frame, data, faces in zip(frames, jpegs, self.detector.detect(images)):
            accepted = []
            for index, face in enumerate(faces):
                verdict = self.gate.assess(frame.camera_id, face.box, face.prob, face.landmarks, face.crop)
                if verdict.accepted:
                    accepted.append((index, face, verdict))
                    continue
                rejected.append((frame.camera_id, verdict.reason))
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("face rejected: %s", verdict.reason, extra={
                        "camera_id": frame.camera_id, "frame_event_id": frame.event_id, "face_index": index,
                        "face_px": round(verdict.face_px, 1), "det_prob": round(verdict.prob, 4),
                        "sharpness": verdict.sharpness, "yaw_deg": verdict.yaw_deg, "pitch_deg": verdict.pitch_deg,
                    })
            if not accepted:
                continue
            snapshot_key = evidence_key("transient", frame.camera_id, frame.source_ts, f"{frame.event_id}.jpg")
            self.store.put_bytes(bucket, snapshot_key, data, "image/jpeg")
            for index, face, verdict in accepted:
                crop = encode_jpeg(face.crop, CROP_JPEG_QUALITY)
                crop_key = evidence_key("transient", frame.camera_id, frame.source_ts, f"{frame.event_id}-{index}.jpg")
                self.store.put_bytes(bucket, crop_key, crop, "image/jpeg")
                outputs.append((FACES, FaceEvent(
                    event_id=f"{frame.event_id}-f{index}",
                    **frame.lineage(),
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
                    quality=verdict.score,
                )))
        for camera_id, reason in rejected:  # counted once the batch succeeded, so a retried batch counts once
            FACES_REJECTED.labels(self.name, camera_id, reason).inc()
        return outputs
