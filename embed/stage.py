"""The embed stage: faces in, one L2-normalised 512-d EmbeddingEvent per face out."""

from __future__ import annotations

from embed.model import FaceEmbedder
from runtime.device import device_from_settings
from runtime.imaging import ImageTooLarge, decode_jpeg
from runtime.stream import BadEvent, StreamProcessor
from schemas.events import EmbeddingEvent, FaceEvent
from schemas.stages import EMBED
from schemas.topics import EMBEDDINGS


class EmbedProcessor(StreamProcessor):
    stage = EMBED

    def start(self) -> None:
        models = self.settings.models
        self.embedder = FaceEmbedder(models.weights_dir, device_from_settings(models), batch_size=self.settings.embed.batch_size)
        self.embedder.warm_up()  # before /readyz turns ready

    def process(self, faces: list[FaceEvent]) -> list[tuple]:
        limits = self.settings.embed
        crops = []
        for face in faces:
            try:  # the caps are checked before decoding (runtime.imaging)
                crops.append(decode_jpeg(face.crop_jpeg, max_pixels=limits.max_crop_pixels, max_bytes=limits.max_crop_bytes))
            except ImageTooLarge as exc:
                raise BadEvent(f"face {face.event_id}: crop over embed's limits ({exc})") from exc
            except Exception as exc:  # noqa: BLE001
                raise BadEvent(f"face {face.event_id}: undecodable crop ({exc})") from exc
        vectors = self.embedder.embed(crops)
        return [
            (EMBEDDINGS, EmbeddingEvent(
                event_id=f"{face.event_id}-e",
                **face.lineage(),
                face_event_id=face.event_id,
                frame_event_id=face.frame_event_id,
                face_index=face.face_index,
                box=face.box,
                det_prob=face.det_prob,
                quality=face.quality,
                crop_key=face.crop_key,
                snapshot_key=face.snapshot_key,
                model=self.embedder.model_id,
                embedding=vector.tolist(),
            ))
            for face, vector in zip(faces, vectors)
        ]
