"""Input limits of detect's and embed's decoding: an image over the caps is refused from its header, before any
pixel is decoded, so a decompression bomb (a few hundred bytes declaring gigapixels) costs no memory."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from runtime.imaging import ImageTooLarge, decode_jpeg, encode_jpeg


def bomb(width: int, height: int) -> bytes:
    """A 16 x 16 JPEG whose frame header (SOF0) declares ``width`` x ``height``."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 150)).save(out, format="JPEG", quality=90)
    data = bytearray(out.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_the_header_is_checked_before_decoding():
    assert Image.open(io.BytesIO(bomb(9500, 9500))).size == (9500, 9500)  # what the header declares
    with pytest.raises(ImageTooLarge, match="9500 x 9500"):
        decode_jpeg(bomb(9500, 9500), max_pixels=16_000_000)
    with pytest.raises(ImageTooLarge):  # past twice Pillow's ceiling: Pillow's own guard, the same error
        decode_jpeg(bomb(30000, 30000))
    with pytest.raises(ImageTooLarge, match="bytes"):
        decode_jpeg(encode_jpeg(np.zeros((64, 64, 3), np.uint8)), max_bytes=100)
    assert decode_jpeg(encode_jpeg(np.zeros((64, 48, 3), np.uint8)), max_pixels=64 * 48).shape == (64, 48, 3)


# Runs in a process of its own whose address space is capped a little above what it holds, so any large
# allocation fails with MemoryError instead of passing unseen.
_CHILD = textwrap.dedent("""
    import resource, sys
    from detect.stage import DetectProcessor
    from embed.stage import EmbedProcessor
    from runtime.settings import DetectSettings, VigilSettings
    from runtime.stream import BadEvent
    from schemas.events import FaceEvent, FrameEvent, utc_now

    data = open(sys.argv[1], "rb").read()
    settings = VigilSettings(detect=DetectSettings(max_frame_pixels=int(sys.argv[2])))
    frame = FrameEvent(camera_id="cam", source_ts=utc_now(), trace_id="t", frame_index=0, width=16, height=16, image_jpeg=data)
    face = FaceEvent(camera_id="cam", source_ts=utc_now(), trace_id="t", frame_event_id="f", face_index=0,
                     box={"x1": 0, "y1": 0, "x2": 1, "y2": 1}, landmarks=[(0.0, 0.0)] * 5, det_prob=0.9, crop_jpeg=data,
                     crop_key="k", snapshot_key="s", frame_width=16, frame_height=16)
    size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize:")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + 256 * 2**20, resource.RLIM_INFINITY))
    for name, decode in (("detect", lambda: DetectProcessor(settings)._decode(frame, data)),
                         ("embed", lambda: EmbedProcessor(settings).process([face]))):
        try:
            decode()
            print(name, "decoded")
        except MemoryError:
            print(name, "out of memory")
        except BadEvent as exc:  # a decoder's MemoryError is reported as a bad event too: tell them apart
            print(name, "out of memory" if isinstance(exc.__cause__, MemoryError) else f"refused: {exc}")
""")


def _decode_in_a_capped_process(tmp_path, data: bytes, max_frame_pixels: int) -> dict[str, str]:
    path = tmp_path / "frame.jpg"
    path.write_bytes(data)
    result = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(max_frame_pixels)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())


@pytest.mark.parametrize(("width", "height"), [(30000, 30000), (9500, 9500)])
def test_a_decompression_bomb_is_refused_before_any_large_allocation(tmp_path, width, height):
    outcome = _decode_in_a_capped_process(tmp_path, bomb(width, height), 16_777_216)
    assert outcome["detect"].startswith("refused:") and "over detect's limits" in outcome["detect"]
    assert f"{width} x {height}" in outcome["detect"] or "decompression bomb" in outcome["detect"].lower()
    assert outcome["embed"].startswith("refused:") and "over embed's limits" in outcome["embed"]


def test_without_the_cap_the_same_bytes_exhaust_the_capped_process(tmp_path):
    # The control: with detect's cap at the ceiling the 90 MP frame is decoded, and its 270 MB do not fit.
    outcome = _decode_in_a_capped_process(tmp_path, bomb(9500, 9500), 100_000_000)
    assert outcome["detect"] == "out of memory"
