"""The embed section reaches the embedder (no model: the embedder is a fake)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import embed.stage
from runtime.settings import EmbedSettings, ModelSettings, VigilSettings


class FakeEmbedder:
    def __init__(self, weights_dir, device, *, batch_size):
        self.weights_dir, self.device, self.batch_size = weights_dir, device, batch_size

    def warm_up(self):
        pass

    def embed(self, crops):
        return np.zeros((len(crops), 512), dtype=np.float32)


def test_embed_batch_size_and_weights_reach_the_embedder(monkeypatch):
    monkeypatch.setattr(embed.stage, "FaceEmbedder", FakeEmbedder)
    monkeypatch.setattr(embed.stage, "device_from_settings", lambda models: "cpu")
    settings = VigilSettings.model_construct(embed=EmbedSettings(batch_size=7), models=ModelSettings(weights_dir=Path("w")))
    processor = embed.stage.EmbedProcessor(settings)
    processor.start()
    assert (processor.embedder.batch_size, processor.embedder.weights_dir) == (7, Path("w"))
    assert processor.batch_size == 7  # and the stream runtime takes batches of the same size
