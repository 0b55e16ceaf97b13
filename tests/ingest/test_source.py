"""ingest.source: sampling by PTS, wall-clock times, downscaling and every kind of bad input."""

from __future__ import annotations

import socket
import time
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import av
import numpy as np
import pytest

from ingest.source import FrameSampler, SourceError, is_live, redact_url, sample_frames
from runtime.imaging import decode_jpeg, encode_jpeg
from tests.ingest.conftest import needs_rtsp
from synthetic.footage import keyframe_offsets, make_corrupt_copy, make_pattern_clip

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def clip10(tmp_path_factory):
    """4 s of 320x240 at 10 fps (40 frames), GOP 10."""
    return make_pattern_clip(tmp_path_factory.mktemp("clip") / "clip10.mp4", n_frames=40, fps=10, size=(320, 240))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- sampling and time ------------------------------------------------------

def test_samples_10fps_file_at_5fps(clip10):
    frames = list(sample_frames(str(clip10), 5, start_wallclock=T0))
    assert len(frames) == 20
    assert [f.index for f in frames] == list(range(0, 40, 2))
    assert [round(f.pts_s, 3) for f in frames] == [round(0.2 * k, 3) for k in range(20)]
    assert frames[0].source_ts == T0
    gaps = [(b.source_ts - a.source_ts).total_seconds() for a, b in zip(frames, frames[1:])]
    assert all(abs(g - 0.2) < 1e-3 for g in gaps)
    assert all(f.source_ts.tzinfo is not None and f.source_ts.utcoffset() == timedelta(0) for f in frames)
    img = frames[0].image
    assert img.dtype == np.uint8 and img.shape == (240, 320, 3) and img.flags.c_contiguous


def test_default_anchor_is_open_time(clip10):
    before = datetime.now(timezone.utc)
    first = next(iter(sample_frames(str(clip10), 5)))
    assert before <= first.source_ts <= datetime.now(timezone.utc)


def test_source_slower_than_target_gives_every_frame(clip10):
    frames = list(sample_frames(str(clip10), 25))
    assert [f.index for f in frames] == list(range(40))


def test_variable_frame_rate_is_sampled_by_pts(tmp_path):
    times = [0.0, 0.03, 0.06, 0.19, 0.21, 0.5, 0.55, 0.61, 1.3, 1.31, 1.45]
    clip = make_pattern_clip(tmp_path / "vfr.mp4", frame_times=times, fps=10, size=(160, 120))
    frames = list(sample_frames(str(clip), 5))
    # One frame per 0.2 s slot, the first in each slot: slots 0, 1 (0.21), 2 (0.5), 3 (0.61), 6 (1.3), 7 (1.45).
    assert [round(f.pts_s, 2) for f in frames] == [0.0, 0.21, 0.5, 0.61, 1.3, 1.45]
    assert [f.index for f in frames] == [0, 4, 5, 7, 8, 10]


def test_max_width_downscales_preserving_aspect(clip10):
    frame = next(iter(sample_frames(str(clip10), 5, max_width=160)))
    assert frame.image.shape == (120, 160, 3)
    frame = next(iter(sample_frames(str(clip10), 5, max_width=1280)))
    assert frame.image.shape == (240, 320, 3)


def test_sampler_counts_decoded_and_yielded_frames(clip10):
    with FrameSampler(str(clip10), 2.5, max_width=200, start_wallclock=T0) as sampler:
        frames = list(sampler)
    assert len(frames) == 10 and frames[0].width == 200 and frames[0].height == 150
    assert sampler.stats.decoded_frames == 40 and sampler.stats.yielded_frames == 10


def test_realtime_paces_to_the_stream_clock(tmp_path):
    clip = make_pattern_clip(tmp_path / "one_second.mp4", n_frames=10, fps=10, size=(160, 120))
    started = time.monotonic()
    frames = list(sample_frames(str(clip), 10, realtime=True))
    assert len(frames) == 10
    assert time.monotonic() - started >= 0.85  # last frame at pts 0.9 s


def test_hwaccel_request_falls_back_to_software(clip10):
    # On a machine without a GPU PyAV raises PermissionError; the source reopens in software.
    sampler = sample_frames(str(clip10), 5, hwaccel=True)
    assert len(list(sampler)) == 20


# --- bad input ----------------------------------------------------------------

def test_missing_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match="not found") as err:
        list(sample_frames(str(missing), 5))
    assert str(missing) in str(err.value) and err.value.frames_yielded == 0


def test_garbage_file(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match="unreadable or corrupt") as err:
        sample_frames(str(junk), 5)
    assert "junk.mp4" in str(err.value)


def test_file_without_video(tmp_path):
    path = tmp_path / "audio.mka"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mp2", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, 0, Fraction(1, 16000)
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            out.mux(packet)
    with pytest.raises(SourceError, match="no video stream .*audio"):
        sample_frames(str(path), 5)


def test_truncated_file_yields_decodable_frames_then_raises(clip10, tmp_path):
    cut = make_corrupt_copy(clip10, tmp_path / "cut.mp4", mode="truncate", at=0.5)
    got = []
    with pytest.raises(SourceError, match="truncated") as err:
        for frame in sample_frames(str(cut), 5):
            got.append(frame)
    assert 5 <= len(got) < 20
    assert err.value.partial and err.value.frames_yielded == len(got)
    assert [f.index for f in got] == list(range(0, 2 * len(got), 2))


def _garble_keyframe(clip, dst, at_s):
    offset = dict(keyframe_offsets(clip))[at_s]
    return make_corrupt_copy(clip, dst, mode="garble", offset=offset)


def test_garbled_file_skips_bad_packets_then_raises(clip10, tmp_path):
    bad = _garble_keyframe(clip10, tmp_path / "garbled.mp4", 2.0)  # the GOP at 2.0-2.9 s is lost
    sampler = sample_frames(str(bad), 10)
    got = []
    with pytest.raises(SourceError, match="corrupt data") as err:
        for frame in sampler:
            got.append(frame)
    assert sampler.stats.decode_errors > 0 and err.value.partial
    pts = [round(f.pts_s, 3) for f in got]
    assert pts == sorted(set(pts)) and all(abs(p * 10 - round(p * 10)) < 1e-6 for p in pts)  # true PTS, in order
    # Everything before the damage (a frame next to it may be released out of order, and dropped).
    assert pts[:19] == [round(0.1 * k, 3) for k in range(19)]
    assert pts[-10:] == [round(0.1 * k, 3) for k in range(30, 40)]  # the next GOP, at its own times


def test_persistent_decode_failure_ends_mid_stream(clip10, tmp_path):
    bad = _garble_keyframe(clip10, tmp_path / "garbled.mp4", 2.0)
    got = []
    with pytest.raises(SourceError, match="decode failure mid-stream") as err:
        for frame in sample_frames(str(bad), 10, max_consecutive_errors=0):
            got.append(frame)
    assert got and err.value.partial and got[-1].pts_s < 3.0


def test_mp4_cut_before_its_index_fails_to_open(tmp_path):
    # Without faststart the moov atom is written last: a cut copy has no index at all.
    src = tmp_path / "moov_last.mp4"
    with av.open(str(src), "w") as out:
        stream = out.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 10, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    cut = make_corrupt_copy(src, tmp_path / "moov_last_cut.mp4", at=0.6)
    with pytest.raises(SourceError, match="truncated before its index"):
        sample_frames(str(cut), 5)


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_closed_port_is_unreachable(scheme):
    url = f"{scheme}://127.0.0.1:{_closed_port()}/x" + (".mp4" if scheme == "http" else "")
    started = time.monotonic()
    with pytest.raises(SourceError, match="unreachable") as err:
        sample_frames(url, 5, timeout_s=2)
    assert time.monotonic() - started < 2.5
    assert url in str(err.value)


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_silent_server_times_out(scheme):
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"{scheme}://127.0.0.1:{listener.getsockname()[1]}/x"
        started = time.monotonic()
        with pytest.raises(SourceError, match=r"no answer within 1 s"):
            sample_frames(url, 5, timeout_s=1)
        assert time.monotonic() - started < 3


def test_credentials_are_masked_in_errors():
    url = f"rtsp://admin:hunter2@127.0.0.1:{_closed_port()}/stream1"
    with pytest.raises(SourceError) as err:
        sample_frames(url, 5, timeout_s=2)
    assert "hunter2" not in str(err.value) and "admin:***@" in str(err.value)
    assert redact_url("rtsp://cam.local/x") == "rtsp://cam.local/x"
    assert is_live("rtsp://cam/x") and not is_live("/videos/a.mp4") and not is_live("https://host/a.mp4")


def test_argument_checks(clip10):
    with pytest.raises(ValueError):
        sample_frames(str(clip10), 0)
    with pytest.raises(ValueError):
        sample_frames(str(clip10), 5, start_wallclock=datetime(2024, 1, 1))  # naive


def test_jpeg_round_trip():
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, 32:] = (200, 30, 90)
    data = encode_jpeg(img, 90)
    assert data[:2] == b"\xff\xd8"
    back = decode_jpeg(data)
    assert back.shape == img.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - img.astype(int)).mean() < 3
    with pytest.raises(ValueError):
        decode_jpeg(b"not a jpeg")


# --- a live RTSP camera (GStreamer's RTSP server, when the system has it) ---------

@needs_rtsp
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_live_rtsp_camera(transport, rtsp_camera):
    camera = rtsp_camera()
    sampler = sample_frames(camera.url, 5, rtsp_transport=transport, timeout_s=5)
    assert sampler.stats.live
    frames = []
    for frame in sampler:
        frames.append((frame, datetime.now(timezone.utc)))
        if len(frames) == 8:
            break
    sampler.close()
    times = [f.source_ts for f, _ in frames]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert all(timedelta(0) <= seen - f.source_ts < timedelta(seconds=2) for f, seen in frames)
    pts = [f.pts_s for f, _ in frames]
    assert all(abs((b - a) - 0.2) < 0.05 for a, b in zip(pts, pts[1:]))
    # The camera goes away mid-stream: the iterator raises, it does not just end.
    sampler = sample_frames(camera.url, 5, rtsp_transport=transport, timeout_s=2)
    next(sampler)
    camera.terminate()
    with pytest.raises(SourceError, match="stream (ended|lost)"):
        for _ in sampler:
            pass
