"""JPEG helpers shared by the stages (frames and crops travel as JPEG).

Images are RGB ``uint8`` NumPy arrays of shape ``(height, width, 3)``
everywhere in Vigil; these two functions are the only place that turns them
into bytes and back.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB ``uint8`` HxWx3 array (or an HxW greyscale one) as JPEG."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"encode_jpeg: expected a uint8 numpy array, got {type(image).__name__} {getattr(image, 'dtype', '')}")
    if image.ndim == 3 and image.shape[2] == 3:
        mode = "RGB"
    elif image.ndim == 2:
        mode = "L"
    else:
        raise ValueError(f"encode_jpeg: expected shape (H, W, 3) or (H, W), got {image.shape}")
    if not 1 <= quality <= 100:
        raise ValueError(f"encode_jpeg: quality must be within 1..100, got {quality}")
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), mode=mode).save(out, format="JPEG", quality=int(quality))
    return out.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode JPEG (or any image Pillow reads) bytes to an RGB ``uint8`` HxWx3 array.

    Raises ``ValueError`` when the bytes are not a readable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB") if img.mode != "RGB" else img
            return np.asarray(rgb, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"decode_jpeg: not a readable image ({len(data)} bytes): {exc}") from exc
